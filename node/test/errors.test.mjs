// Every error code a store raises, each from the situation that causes it.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync, readFileSync, chmodSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { spawn, spawnSync, execFileSync } from 'node:child_process'
import { open, StatesafeError } from '../index.mjs'
import { tempDir, here, canMount, mountDir } from './helpers.mjs'

const child = join(here, 'fixtures', 'child.cjs')

function loud(t, why) {
  console.error(`\n*** SKIPPED ${t.name}: ${why} ***\n`)
  t.skip(why)
}

function hasStrace() {
  return spawnSync('strace', ['-V']).status === 0
}

/** Runs the child under strace, failing the K-th fsync with EIO. */
function withFailedFsync(file, k) {
  const r = spawnSync(
    'strace',
    ['-f', '-qq', '-o', '/dev/null', '-e', 'trace=fsync', '-e', `inject=fsync:error=EIO:when=${k}`, process.execPath, child, 'replace-twice', file],
    { encoding: 'utf8' },
  )
  assert.equal(r.status, 0, r.stderr)
  return JSON.parse(r.stdout)
}

function isStatesafe(e, code) {
  assert.ok(e instanceof StatesafeError, `expected a StatesafeError, got ${e}`)
  assert.equal(e.code, code)
  assert.ok(e.message.length > 0)
  return true
}

test('ENOENT: a missing file, never confused with a damaged one', async (t) => {
  const store = open(join(tempDir(t), 'missing.json'))
  await assert.rejects(store.load(), (e) => isStatesafe(e, 'ENOENT') && /does not exist/.test(e.message) && e.hint.length > 0)
})

test('ECORRUPT (recovery "fail") with line and column; EUNRECOVERABLE with no backup', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'state.json')
  writeFileSync(file, '{\n  "a": 1,\n  "b": tru\n}\n')
  const failing = open(file, { recovery: 'fail' })
  await assert.rejects(failing.get(), (e) => isStatesafe(e, 'ECORRUPT') && e.line === 4 && typeof e.column === 'number')
  // A file statesafe never wrote is not JSON, not damaged state: left as it is.
  await assert.rejects(open(file).get(), (e) => isStatesafe(e, 'ECORRUPT') && e.line === 4)
  assert.equal(readFileSync(file, 'utf8'), '{\n  "a": 1,\n  "b": tru\n}\n', 'a foreign file stays as it is')
  // A file statesafe committed, then damaged, with no backup to restore: unrecoverable.
  const kept = join(dir, 'kept.json')
  open(kept, { backups: 0 }).replaceSync({ a: 1 })
  writeFileSync(kept, '{\n  "a": 1,\n  "b": tru\n}\n')
  await assert.rejects(open(kept, { backups: 0 }).get(), (e) => {
    isStatesafe(e, 'EUNRECOVERABLE')
    assert.ok(e.cause instanceof StatesafeError && e.cause.code === 'ECORRUPT')
    assert.equal(e.cause.line, 4)
    assert.deepEqual(e.tried, [])
    assert.match(e.hint, /damaged file is kept at/)
    return true
  })
  assert.equal(readFileSync(kept, 'utf8'), '{\n  "a": 1,\n  "b": tru\n}\n', 'the damaged file stays in place')
})

test('ELOCKTIMEOUT names the holder in another process', async (t) => {
  const file = join(tempDir(t), 'state.json')
  open(file).replaceSync({ n: 1 })
  const holder = spawn(process.execPath, [child, 'hold-lock', file, '3000'], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.after(() => holder.kill())
  await new Promise((resolve) => holder.stdout.once('data', resolve))
  const store = open(file, { lockTimeoutMs: 100 })
  for (const attempt of [() => store.update(() => {}), async () => store.updateSync(() => {})]) {
    await assert.rejects(attempt(), (e) => {
      isStatesafe(e, 'ELOCKTIMEOUT')
      assert.equal(e.holder.pid, holder.pid)
      assert.equal(e.holder.operation, 'withLock')
      assert.match(e.holder.command, /child\.cjs/)
      assert.ok(e.waitedMs >= 100)
      assert.match(e.hint, new RegExp(`process ${holder.pid}`))
      return true
    })
  }
})

test('ECONFLICT, EINVALID, ETOOLARGE, EBADSCHEMA, EBADPATH, ENOGENERATION, ECLOSED', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'state.json')
  const store = open(file, { schema: { type: 'object', required: ['n'] }, maxBytes: 100 })
  store.replaceSync({ n: 1 })
  assert.throws(() => store.replaceSync({ n: 2 }, { ifGeneration: 0 }), (e) => isStatesafe(e, 'ECONFLICT') && e.expected === 0 && e.actual === 1)
  assert.throws(() => store.replaceSync({ m: 2 }), (e) => isStatesafe(e, 'EINVALID') && e.pointer === '/' && e.rule === '/required')
  assert.throws(() => store.replaceSync({ n: 'x'.repeat(200) }), (e) => isStatesafe(e, 'ETOOLARGE') && e.limit === 100 && e.size > 200)
  assert.throws(() => open(join(dir, 'b.json'), { schema: { minimum: 'three' } }), (e) => isStatesafe(e, 'EBADSCHEMA'))
  mkdirSync(join(dir, 'adir'))
  assert.throws(() => open(join(dir, 'adir')), (e) => isStatesafe(e, 'EBADPATH'))
  assert.throws(() => open(join(dir, 'nodir', 'x.json')), (e) => isStatesafe(e, 'EBADPATH'))
  assert.throws(() => store.documentAtSync(99), (e) => isStatesafe(e, 'ENOGENERATION') && e.generation === 99)
  store.close()
  assert.throws(() => store.getSync(), (e) => isStatesafe(e, 'ECLOSED'))
})

test('ENOTJSON for a string holding half of a character, naming its place: never written, the file still readable by every reader', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'state.json')
  const store = open(file)
  store.replaceSync({ n: 1 })
  const before = readFileSync(file, 'utf8')
  const cut = '\u{1F600}'.slice(0, 1) // an emoji cut by index: a lone surrogate
  // Checked with the other values (review21node): a TypeError, ENOTJSON, `pointer`
  // the place (the object, for a key).
  const attempts = [
    [() => store.replaceSync({ n: 2, s: cut }), '/s'],
    [() => store.updateSync((s) => { s.s = cut }), '/s'],
    [() => store.updateSync((s) => { s[cut] = 1 }), '/'],
    [() => store.updateSync((s) => { s.list = ['ok', 'x' + cut] }), '/list/1'],
  ]
  const notJson = (where) => (e) => e instanceof TypeError && e.code === 'ENOTJSON' && e.pointer === where && e.path === file && /surrogate/.test(e.message)
  for (const [attempt, where] of attempts) {
    assert.throws(attempt, notJson(where))
    assert.equal(readFileSync(file, 'utf8'), before)
  }
  await assert.rejects(store.update((s) => { s.s = cut }), notJson('/s'))
  assert.equal(readFileSync(file, 'utf8'), before)
  // A whole character is fine, and the CLI reads it back.
  store.updateSync((s) => { s.s = '\u{1F600}' })
  assert.deepEqual(store.getSync(), { n: 1, s: '\u{1F600}' })
})

test('EOUTCOMEUNKNOWN when the directory fsync fails, then EPOISONED until reopened', (t) => {
  if (!hasStrace()) return loud(t, 'strace is not installed: cannot inject an fsync failure')
  const file = join(tempDir(t), 'state.json')
  open(file).replaceSync({ a: 1 })
  // fsync 1: the temporary file; fsync 2: the directory, after the rename.
  const [first, second] = withFailedFsync(file, 2)
  assert.equal(first.code, 'EOUTCOMEUNKNOWN')
  assert.equal(first.op, 'syncDir')
  assert.equal(first.cause, 'EIO')
  assert.equal(first.generation, 2)
  assert.equal(second.code, 'EPOISONED')
  assert.match(second.hint, /reopen/)
  assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { a: 2 }, 'the new version is in place')
})

test('EIO when the file fsync fails: the old version stays, the store is poisoned', (t) => {
  if (!hasStrace()) return loud(t, 'strace is not installed: cannot inject an fsync failure')
  const file = join(tempDir(t), 'state.json')
  open(file).replaceSync({ a: 1 })
  const [first, second] = withFailedFsync(file, 1)
  assert.equal(first.code, 'EIO')
  assert.equal(first.op, 'syncFile')
  assert.equal(first.cause, 'EIO')
  assert.equal(second.code, 'EPOISONED')
  assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { a: 1 })
})

test('ENOSPC on a full filesystem: the file is unchanged', async (t) => {
  if (process.getuid() !== 0 || !canMount(tempDir(t))) return loud(t, 'needs root and mount(2) to make a small tmpfs')
  const dir = mountDir(t, 'size=256k')
  const file = join(dir, 'state.json')
  const store = open(file, { backups: 0, history: 0 })
  await store.replace({ pad: 'x'.repeat(1000) })
  await assert.rejects(store.replace({ pad: 'y'.repeat(400_000) }), (e) => {
    isStatesafe(e, 'ENOSPC')
    assert.equal(e.cause.code, 'ENOSPC')
    assert.match(e.hint, /unchanged/)
    return true
  })
  assert.equal((await store.get()).pad, 'x'.repeat(1000))
})

test('EROFS on a read-only filesystem', async (t) => {
  if (process.getuid() !== 0 || !canMount(tempDir(t))) return loud(t, 'needs root and mount(2) to make a read-only tmpfs')
  const dir = mountDir(t, 'size=1m')
  const file = join(dir, 'state.json')
  const writer = open(file)
  await writer.replace({ a: 1 })
  writer.close() // its lock file is open for writing, which would keep the remount busy
  execFileSync('mount', ['-o', 'remount,ro', dir])
  const store = open(file)
  await assert.rejects(store.update((s) => void (s.a = 2)), (e) => isStatesafe(e, 'EROFS') && e.cause.code === 'EROFS')
  assert.deepEqual(await store.get(), { a: 1 }, 'reads still work')
})

test('EACCES for a user who may not write the directory', async (t) => {
  if (process.getuid() !== 0) return loud(t, 'needs root to run a child as user nobody')
  const dir = tempDir(t)
  chmodSync(dir, 0o755)
  const file = join(dir, 'state.json')
  open(file).replaceSync({ n: 1 })
  const r = spawnSync(process.execPath, [child, 'update-once', file], { uid: 65534, gid: 65534, encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout)
  assert.equal(out.code, 'EACCES', out.message)
  assert.equal(out.cause, 'EACCES')
  assert.deepEqual(open(file).getSync(), { n: 1 })
})

for (const how of ['exit', 'throw']) {
  test(`a process that dies inside update (${how === 'exit' ? 'process.exit' : 'uncaught exception'}) leaves the old version and no lock`, (t) => {
    const file = join(tempDir(t), 'state.json')
    open(file).replaceSync({ n: 1 })
    const r = spawnSync(process.execPath, [child, 'die-in-update', file, how], { encoding: 'utf8' })
    assert.notEqual(r.status, 0)
    if (how === 'throw') assert.match(r.stderr, /uncaught inside update/)
    const store = open(file, { lockTimeoutMs: 0 }) // the kernel released the lock
    assert.deepEqual(store.getSync(), { n: 1 })
    assert.equal(store.updateSync((s) => void (s.n = 2)).generation, 2)
  })
}
