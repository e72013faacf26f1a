// Builds the native addon with cargo and puts it where index.js loads it:
// node/statesafe.node. `--debug` builds without optimizations (faster to compile).
import { execFileSync } from 'node:child_process'
import { copyFileSync, renameSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(dirname(fileURLToPath(import.meta.url)))
const debug = process.argv.includes('--debug')
const cargo = process.env.CARGO ?? 'cargo'
execFileSync(cargo, ['build', '-p', 'statesafe-node', ...(debug ? [] : ['--release'])], {
  cwd: here,
  stdio: 'inherit',
})
const meta = JSON.parse(
  execFileSync(cargo, ['metadata', '--format-version', '1', '--no-deps'], { cwd: here, encoding: 'utf8' }),
)
const lib = { darwin: 'libstatesafe_node.dylib', win32: 'statesafe_node.dll' }[process.platform] ?? 'libstatesafe_node.so'
const built = join(meta.target_directory, debug ? 'debug' : 'release', lib)
// Copy then rename: a process that has the old addon loaded keeps its mapping intact.
const dest = join(here, 'statesafe.node')
copyFileSync(built, `${dest}.tmp`)
renameSync(`${dest}.tmp`, dest)
console.log(`statesafe: built ${dest} (${debug ? 'debug' : 'release'})`)
