// sources.sha256 in a build: the hash of the sources it was built from. The browser tests
// recompute it (tests/support/browser.py sources_hash), so a committed build that lags its
// sources fails. Used by vite.config.js (the console) and vite.h5.config.js (the H5 page).
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath, URL } from 'node:url'

const here = fileURLToPath(new URL('.', import.meta.url))

function files(path) {
  return statSync(path).isDirectory() ? readdirSync(path).flatMap((name) => files(join(path, name))) : [path]
}

// `sources`: files and folders of frontend/ the build is made from.
function sourcesHash(sources) {
  const hash = createHash('sha256')
  const all = sources.flatMap((s) => files(join(here, s))).map((p) => relative(here, p).split('\\').join('/')).sort()
  for (const path of all) {
    hash.update(path + '\0')
    hash.update(readFileSync(join(here, path)))
    hash.update('\0')
  }
  return hash.digest('hex')
}

export function stampSources(sources) {
  return {
    name: 'stamp-sources',
    generateBundle() {
      this.emitFile({ type: 'asset', fileName: 'sources.sha256', source: sourcesHash(sources) + '\n' })
    },
  }
}
