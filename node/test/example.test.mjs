// The seed example (examples/node): type-checks with `tsc --strict`, and runs.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { cpSync, mkdirSync, symlinkSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir, packageDir, repoDir } from './helpers.mjs'

const examples = join(repoDir, 'examples', 'node')

test('examples/node compiles under tsc --strict and runs: the ported StateStore', (t) => {
  const out = tempDir(t)
  const tsc = join(packageDir, 'node_modules', 'typescript', 'bin', 'tsc')
  execFileSync(process.execPath, [tsc, '-p', join(examples, 'tsconfig.json'), '--outDir', out], { stdio: 'inherit' })
  // Resolve `statesafe` the way an installed package resolves: node_modules/statesafe.
  mkdirSync(join(out, 'node_modules'))
  symlinkSync(packageDir, join(out, 'node_modules', 'statesafe'), 'dir')
  const stateDir = join(out, '.hypernative')
  const run = () => JSON.parse(execFileSync(process.execPath, [join(out, 'main.js'), stateDir], { encoding: 'utf8' }))
  const first = run()
  assert.deepEqual(first.resources, ['agent-alpha'])
  assert.equal(first.verified, true)
  assert.equal(first.restored, 1)
  assert.deepEqual(first.failures, {})
  const second = run() // a second run of the CLI on the same state
  assert.equal(second.verified, true)
  assert.equal(second.backups, 5, 'backups: 5 keeps five')
  assert.ok(readdirSync(stateDir).includes('state.json'))
})
