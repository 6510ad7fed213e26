// The staff console: built into the Python package, which serves it at /console/ (quanyi/web/console.py).
import { fileURLToPath, URL } from 'node:url'
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'
import { stampSources } from './stamp.js'

export default defineConfig({
  base: '/console/',
  plugins: [vue(), stampSources(['index.html', 'vite.config.js', 'stamp.js', 'src'])],
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
