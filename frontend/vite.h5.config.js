// The customer H5 page: built into the Python package, which serves it at /h5/ (quanyi/web/h5_static.py).
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath, URL } from 'node:url'
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

const here = fileURLToPath(new URL('.', import.meta.url))
const SOURCES = ['h5', 'vite.h5.config.js']

function files(path) {
  return statSync(path).isDirectory() ? readdirSync(path).flatMap((name) => files(join(path, name))) : [path]
}

// sources.sha256 in the build, as the console's (vite.config.js): the hash of the sources it was
// built from, which tests/test_h5_browser.py recomputes, so a committed build that lags fails.
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
  root: fileURLToPath(new URL('./h5', import.meta.url)),
  base: '/h5/',
  plugins: [vue(), stampSources],
  build: {
    outDir: fileURLToPath(new URL('../quanyi/web/static/h5', import.meta.url)),
    emptyOutDir: true,
    // Phones on slow networks: one small script, no module preload polyfill.
    modulePreload: { polyfill: false },
  },
  server: {
    // `npx vite --config vite.h5.config.js`: the API of `make run` behind the dev server.
    proxy: { '/h5/api': 'http://127.0.0.1:8080', '/v1': 'http://127.0.0.1:8080' },
  },
})
