// The customer H5 page: built into the Python package, which serves it at /h5/ (quanyi/web/h5_static.py).
import { fileURLToPath, URL } from 'node:url'
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'
import { stampSources } from './stamp.js'

export default defineConfig({
  root: fileURLToPath(new URL('./h5', import.meta.url)),
  base: '/h5/',
  plugins: [vue(), stampSources(['h5', 'vite.h5.config.js', 'stamp.js'])],
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
