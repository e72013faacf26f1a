// Red team, session 12: attacks on the Node package. A skipped test is a bug it found
// (the reason says how it happens); the others are attacks the package withstands that
// no other test makes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { open, openAsync } from '../index.mjs'
import { exact, numberText, packageDir, tempDir } from './helpers.mjs'

// A bug's test is skipped with its reason; STATESAFE_RED12_RUN=1 runs it (to watch it fail).
const bug = (reason) => (process.env.STATESAFE_RED12_RUN ? false : reason)


for (const written of ['12345678901234567890e0', '1234567890.123456789e10', '9007199254740993.0', '1e-400']) {
  // Was a bug (red12): such a number was read as the nearest double and written back as it.
  test(`a number another program wrote as ${written} keeps its value when the program does not touch it`, async (t) => {
    const file = join(tempDir(t), 'state.json')
    writeFileSync(file, `{"id": ${written}, "n": 0}\n`)
    const store = open(file)
    await store.update((s) => void (s.n = 1))
    const text = readFileSync(file, 'utf8')
    assert.match(text, /"n": ?1/)
    assert.deepEqual(exact(numberText(text, 'id')), exact(written), `the untouched id changed: ${text}`)
    // And through the synchronous path.
    writeFileSync(file, `{"id": ${written}, "n": 0}\n`)
    open(file).updateSync((s) => void (s.n = 2))
    const again = readFileSync(file, 'utf8')
    assert.deepEqual(exact(numberText(again, 'id')), exact(written), `the untouched id changed: ${again}`)
  })
}

// Was a bug (red12): served as Infinity, then blamed on the program.
test('a number beyond a double\'s range in the file (1e400) is neither served as Infinity nor blamed on the program', async (t) => {
  const file = join(tempDir(t), 'state.json')
  writeFileSync(file, '{"a": 1e400, "n": 0}\n')
  const store = open(file)
  let got
  try {
    got = await store.get()
  } catch (e) {
    // Refusing is fine if the error says where and why.
    assert.ok(e.message.includes(file) && e.message.includes('/a'), e.message)
  }
  if (got !== undefined) assert.ok(Number.isFinite(got.a) || typeof got.a === 'bigint', `served ${got.a}`)
  try {
    await store.update((s) => void (s.n = 1))
    assert.match(readFileSync(file, 'utf8'), /"a": ?1e400/, 'the untouched 1e400 was changed')
  } catch (e) {
    assert.ok(e.message.includes(file), `the error names no file: ${e.message}`)
    assert.ok(/1e400|range|overflow|too large/i.test(e.message), `the error names no cause: ${e.message}`)
    assert.match(readFileSync(file, 'utf8'), /"a": 1e400/)
  }
})

// Once a bug (a plain document starting with a `statesafe` member was read as a sealed
// envelope): fixed, only an envelope's exact shape is sealed.
test('a document whose first key is "statesafe" reads back as it was committed', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const store = open(file, { default: {} })
  await store.replace({ statesafe: { v: 2 }, x: 1 })
  assert.deepEqual(await store.get(), { statesafe: { v: 2 }, x: 1 })
  await store.update((s) => void (s.x = 2))
  assert.deepEqual(open(file).getSync(), { statesafe: { v: 2 }, x: 2 })
})

// A worker thread terminated while its update's function is pending (the lock held by
// the addon's native thread, waiting for the function's promise), or while its update
// waits for the lock: the lock is released (at once, or as soon as it is granted) and
// nothing is written. Otherwise the lock would stay held by a live process: every
// other writer would time out naming this process until it exits.

function workerUpdating(file, body) {
  return new Worker(`
const { parentPort } = require('node:worker_threads')
const { open } = require(${JSON.stringify(join(packageDir, 'index.js'))})
const store = open(${JSON.stringify(file)}, { default: { n: 0 }, lockTimeoutMs: 60000 })
${body}
`, { eval: true })
}

test('a worker terminated inside update releases the lock and writes nothing', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const store = open(file, { default: { n: 0 }, lockTimeoutMs: 10000 })
  await store.replace({ n: 0 })
  const worker = workerUpdating(file, `store.update(async (s) => { s.n = 99; parentPort.postMessage('inside'); await new Promise(() => {}) })`)
  await new Promise((resolve) => worker.once('message', resolve))
  await worker.terminate()
  await store.update((s) => void (s.n += 1))
  assert.deepEqual(await store.get(), { n: 1 })
  assert.equal(await store.generation(), 2)
})

test('a worker terminated while its update waits for the lock leaves no lock behind', async (t) => {
  // The terminated worker's native thread goes on waiting for the lock until it gets it
  // (then finds no JavaScript to run, and lets go): it may still be waiting when the
  // test ends, and it re-creates the sidecar if the directory is removed under it. So
  // this test's directory is removed with retries (without blocking the event loop),
  // not by tempDir's single attempt.
  const dir = mkdtempSync(join(process.env.STATESAFE_TEST_DIR ?? tmpdir(), 'statesafe-node-'))
  t.after(() => rm(dir, { recursive: true, force: true, maxRetries: 50, retryDelay: 100 }))
  const file = join(dir, 'state.json')
  const store = open(file, { default: { n: 0 }, lockTimeoutMs: 10000 })
  await store.replace({ n: 0 })
  let worker
  await store.withLock(async () => {
    worker = workerUpdating(file, `parentPort.postMessage('waiting'); store.update((s) => { s.n = 99 })`)
    await new Promise((resolve) => worker.once('message', resolve))
    // The worker's update is now (or soon) blocked on the lock this store holds.
    await new Promise((resolve) => setTimeout(resolve, 200))
    await worker.terminate()
  })
  await store.update((s) => void (s.n += 1))
  // Its function can never run (its thread is gone): nothing of it is written.
  assert.deepEqual(await store.get(), { n: 1 })
  await store.update((s) => void (s.n += 1))
  assert.deepEqual(await store.get(), { n: 2 })
})

test('an error of a PostgreSQL state has a code of its own and names the URL in `path`', async () => {
  const url = 'postgres://nobody@127.0.0.1:1/db?state=red12&connect_timeout=2'
  await assert.rejects(async () => open(url).get(), (e) => {
    assert.notEqual(e.code, 'ESTATESAFE', e.message)
    assert.equal(e.path, url)
    return true
  })
})

// Another local user plants a symlink under the state's name in a sticky, world-writable
// directory (a shared /tmp), pointing at a file of ours. Needs root (to act as `nobody`
// through setpriv, and to make the directory).

function plantedLink(t) {
  if (process.getuid() !== 0) return null
  const base = tempDir(t)
  chmodSync(base, 0o755) // the other user must reach the shared directory
  const dir = join(base, 'shared')
  mkdirSync(dir)
  chmodSync(dir, 0o1777)
  const victim = join(base, 'victim.json')
  writeFileSync(victim, '{"secret": 1}\n', { mode: 0o600 })
  const link = join(dir, 'state.json')
  try {
    execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'ln', '-s', victim, link])
  } catch {
    return null
  }
  return { link, victim }
}

test('a symlink another user planted in a sticky directory is refused; its target is untouched', async (t) => {
  const planted = plantedLink(t)
  if (!planted) return t.skip('needs root and setpriv to act as another user')
  assert.throws(() => open(planted.link, { default: { n: 0 } }), (e) => e.message.includes(planted.link) && /symbolic link owned by uid 65534/.test(e.message))
  assert.equal(readFileSync(planted.victim, 'utf8'), '{"secret": 1}\n')
})

// Once a red12 bug (fixed in session 12): EUNSAFE, with `path`.
test('the refusal of a planted symlink has a code of its own and names the path', async (t) => {
  const planted = plantedLink(t)
  if (!planted) return t.skip('needs root and setpriv to act as another user')
  assert.throws(() => open(planted.link, { default: { n: 0 } }), (e) => {
    assert.equal(e.code, 'EUNSAFE', e.message)
    assert.equal(e.path, planted.link)
    return true
  })
})

// Was a bug (red12): `open(url)` connected on the JavaScript thread, and
// `connect_timeout` bounded only the TCP connect (tokio-postgres), not the startup
// after it: against a port that accepts and never answers (a hung server or pooler, a
// mistyped port of an HTTP service), `open` never returned and the event loop was
// blocked the whole time. Fixed in session 13: the whole start-up is bounded, and
// `openAsync` connects on a thread of the addon (the next test).
test('open(url) of a port that accepts and never answers fails within the connect timeout', async (t) => {
  const { createServer } = await import('node:net')
  const { spawn } = await import('node:child_process')
  const held = []
  const server = createServer((socket) => held.push(socket)) // accept, never answer
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => { held.forEach((s) => s.destroy()); server.close() })
  const url = `postgres://nobody@127.0.0.1:${server.address().port}/db?state=a&connect_timeout=1`
  // In a child process: this test's own event loop must stay free to accept.
  const child = spawn(process.execPath, ['-e', `
    const { open } = require(${JSON.stringify(join(packageDir, 'index.js'))})
    try { open(${JSON.stringify(url)}); console.log('opened') } catch (e) { console.log('error ' + e.code) }
  `], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d) => { out += d })
  const finished = await new Promise((resolve) => {
    const guard = setTimeout(() => { child.kill('SIGKILL'); resolve(false) }, 20000)
    child.on('exit', () => { clearTimeout(guard); resolve(true) })
  })
  assert.ok(finished, 'open(url) still blocked after 20 s with connect_timeout=1')
  assert.match(out, /^error /)
})

test('openAsync(url) of a port that accepts and never answers leaves the event loop free and fails with EREMOTE', async (t) => {
  const { createServer } = await import('node:net')
  const held = []
  const server = createServer((socket) => held.push(socket)) // accept, never answer
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => { held.forEach((s) => s.destroy()); server.close() })
  const url = `postgres://nobody@127.0.0.1:${server.address().port}/db?state=a&connect_timeout=1`
  // Counts the timer's turns while the open is under way: a blocked event loop runs
  // none before the promise settles (its continuation comes before any timer).
  let turns = 0
  const timer = setInterval(() => { turns += 1 }, 20)
  try {
    await assert.rejects(openAsync(url), (e) => {
      assert.equal(e.code, 'EREMOTE', e.message)
      assert.equal(e.path, url)
      assert.match(e.message, /connect_timeout/)
      return true
    })
  } finally {
    clearInterval(timer)
  }
  assert.ok(turns > 0, 'the event loop ran nothing while openAsync connected')
})

test('openAsync opens a file as open does', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const store = await openAsync(file, { default: { n: 0 } })
  await store.update((s) => void (s.n += 1))
  assert.deepEqual(open(file).getSync(), { n: 1 })
  assert.equal(store.path, file)
  await assert.rejects(openAsync(file, { nope: 1 }), TypeError)
})
