// The staff console: built into the Python package, which serves it at /console/ (quanyi/web/console.py).
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath, URL } from 'node:url'
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

const here = fileURLToPath(new URL('.', import.meta.url))
const SOURCES = ['index.html', 'vite.config.js', 'src']

function files(path) {
  return statSync(path).isDirectory() ? readdirSync(path).flatMap((name) => files(join(path, name))) : [path]
}

// sources.sha256 in the build: the hash of the sources it was built from, which a test
// (tests/test_console_browser.py) recomputes, so a committed build that lags its sources fails.
function sourcesHash() {
  const hash = createHash('sha256')
  const all = SOURCES.flatMap((s) => files(join(here, s))).map((p) => relative(here, p).split('\\').join('/')).sort()
  for (const path of all) {
    hash.update(path + '\0')
    hash.update(readFileSync(join(here, path)))
    hash.update('\0')
  }
  return hash.digest('hex')
}

const stampSources = {
  name: 'stamp-sources',
  generateBundle() {
    this.emitFile({ type: 'asset', fileName: 'sources.sha256', source: sourcesHash() + '\n' })
  },
}

export default defineConfig({
  base: '/console/',
  plugins: [vue(), stampSources],
  build: {
    outDir: fileURLToPath(new URL('../quanyi/web/static/console', import.meta.url)),
    emptyOutDir: true,
    chunkSizeWarningLimit: 1500,
    rollupOptions: {
      output: {
        // Libraries change less often than the console: their own files stay cached longer.
        manualChunks: { element: ['element-plus'] },
      },
    },
  },
  server: {
    // `npm run dev`: the API of `make run` behind the dev server.
    proxy: { '/admin': 'http://127.0.0.1:8080' },
  },
})
