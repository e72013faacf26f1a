// Session 22 (pol22): what Python reads of the numbers Node writes, error descriptions, paths, info().deleted, EUNSAFE's what.
// (pol22's commits that kept the text of untouched numbers such as `1.0` were reverted: a
// 5x slower update of a 1 MiB document, and red22b finding 2; docs/node.md, "Number text".)
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, readFileSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { open, openAsync, StatesafeError } from '../index.mjs'
import { tempDir } from './helpers.mjs'

// What Python reads of what Node wrote: the mapping docs/node.md and node/README.md give.
test('pol22: numbers Node writes read back in Python as the value and type the program meant', async (t) => {
  const python = process.env.STATESAFE_PYTHON ?? 'python3'
  if (spawnSync(python, ['-c', 'import statesafe'], { stdio: 'ignore' }).status !== 0) {
    assert.notEqual(process.env.CI, 'true', `${python} cannot import statesafe (set STATESAFE_PYTHON)`)
    t.skip('the Python package is not installed')
    return
  }
  const file = join(tempDir(t), 'state.json')
  const store = open(file)
  await store.replace({ big: 1e21, huge: 2 ** 70, int: 3, half: 0.5, tiny: 1.5e-7, neg: -1e22, z: 0, nz: -0, max: Number.MAX_VALUE })
  // Python (statesafe and json) reads each: [type name, repr].
  const script = `
import json, statesafe, sys
d = statesafe.open(sys.argv[1]).get()
j = json.load(open(sys.argv[1]))
print(json.dumps({k: [type(v).__name__, repr(v), type(j[k]).__name__, repr(j[k])] for k, v in d.items()}))
`
  const out = spawnSync(python, ['-c', script, file], { encoding: 'utf8' })
  assert.equal(out.status, 0, out.stderr)
  const got = JSON.parse(out.stdout)
  const want = {
    // Integral doubles: Python ints of exactly the double's value.
    big: ['int', '1000000000000000000000'],
    huge: ['int', String(2n ** 70n)],
    int: ['int', '3'],
    neg: ['int', '-10000000000000000000000'],
    z: ['int', '0'],
    max: ['int', BigInt(Number.MAX_VALUE).toString()],
    // Non-integral doubles: floats of the same value.
    half: ['float', '0.5'],
    tiny: ['float', '1.5e-07'],
    // -0 is written as JSON.stringify writes it: 0.
    nz: ['int', '0'],
  }
  for (const [k, [type, repr]] of Object.entries(want)) {
    assert.deepEqual(got[k], [type, repr, type, repr], k)
  }
  // And Node reads back what it wrote.
  const back = await store.get()
  assert.ok(Object.is(back.nz, 0))
  assert.equal(back.big, 1e21)
  assert.equal(back.max, Number.MAX_VALUE)
})

test('pol22: ENOTJSON and ERANGE errors have describe(), as every statesafe error', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const store = open(file, { default: {} })
  const e1 = await store.update((s) => void (s.when = new Date(0))).catch((e) => e)
  assert.equal(e1.code, 'ENOTJSON', e1.message)
  assert.ok(e1 instanceof TypeError)
  assert.equal(typeof e1.describe, 'function')
  assert.equal(e1.describe(), `error: ${e1.message}\nhint: ${e1.hint}`)
  assert.ok(e1.hint.length > 0)
  // Not an own enumerable field: a spread or JSON of the error shows data only.
  assert.equal(Object.keys(e1).includes('describe'), false)
  writeFileSync(file, '{"x": 1e99999999999}\n')
  const e2 = await store.get().catch((e) => e)
  assert.equal(e2.code, 'ERANGE', e2.message)
  assert.ok(e2 instanceof RangeError)
  // Its message ends with its hint line: describe() gives it once, as the hint.
  assert.match(e2.hint, /^store such a number as a string/)
  assert.equal(e2.describe(), `error: ${e2.message.slice(0, e2.message.indexOf('\nhint: '))}\nhint: ${e2.hint}`)
  const e3 = (() => {
    try {
      open(file, { lockTimeoutMS: 5 })
    } catch (e) {
      return e
    }
  })()
  assert.equal(e3.code, 'EBADOPTION')
  assert.match(e3.describe(), /^error: statesafe: unknown option `lockTimeoutMS`.*\nhint: /s)
})

test('pol22: a store opened with a relative path keeps to its file after process.chdir()', async (t) => {
  const dir = tempDir(t)
  const elsewhere = tempDir(t)
  const before = process.cwd()
  t.after(() => process.chdir(before))
  process.chdir(dir)
  const store = open('state.json', { default: { n: 0 } })
  await store.update((s) => void (s.n = 1))
  process.chdir(elsewhere)
  await store.update((s) => void (s.n = 2))
  store.updateSync((s) => void (s.n = 3))
  assert.equal((await store.get()).n, 3)
  assert.equal(JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')).n, 3)
  assert.equal(existsSync(join(elsewhere, 'state.json')), false)
  // `store.path` is the path resolved at the opening: still the file's after the chdir.
  assert.equal(store.path, join(dir, 'state.json'))
  assert.equal(JSON.parse(readFileSync(store.path, 'utf8')).n, 3)
  const opened = await openAsync('other.json', { default: {} })
  assert.equal(opened.path, join(elsewhere, 'other.json'))
})

test('pol22: a NUL byte in the path is EBADPATH naming the path, not EIO', async (t) => {
  const dir = tempDir(t)
  const bad = join(dir, 'sta\0te.json')
  const check = (e) => {
    assert.equal(e.code, 'EBADPATH', e.message)
    assert.equal(e.kind, 'bad_path')
    assert.ok(e instanceof StatesafeError)
    assert.match(e.message, /NUL/)
    assert.match(e.reason, /NUL/)
    assert.ok(e.hint.length > 0)
    assert.match(e.describe(), /^error: .*\nhint: /s)
    return true
  }
  assert.throws(() => open(bad, { default: {} }), check)
  await assert.rejects(openAsync(bad, { default: {} }), check)
})

test('pol22: info().deleted says the state file was deleted (as the CLI)', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const store = open(file, { default: { n: 0 } })
  assert.equal((await store.info()).deleted, false)
  await store.update((s) => void (s.n = 1))
  await store.update((s) => void (s.n = 2))
  assert.equal(store.infoSync().deleted, false)
  unlinkSync(file)
  const info = await store.info()
  assert.equal(info.deleted, true)
  assert.equal(info.exists, false)
  assert.equal(info.generation, 2)
})

test('pol22: an EUNSAFE error says which refusal it is (`what`, the core\'s name)', async (t) => {
  const dir = tempDir(t)
  const victim = join(dir, 'victim')
  writeFileSync(victim, 'x')
  // The sidecar's lock file a symlink, set up by hand: refused as planted.
  mkdirSync(join(dir, '.state.json.statesafe'))
  symlinkSync(victim, join(dir, '.state.json.statesafe', 'lock'))
  const e = await open(join(dir, 'state.json'), { default: {} }).update((s) => void (s.n = 2)).catch((err) => err)
  assert.equal(e.code, 'EUNSAFE', e.message)
  assert.equal(e.what, 'planted')
  assert.match(e.reason, /symbolic link/)
  assert.equal(readFileSync(victim, 'utf8'), 'x')
})
