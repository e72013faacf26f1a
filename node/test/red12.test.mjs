// Red team, session 12: attacks on the Node package. A skipped test is a bug it found
// (the reason says how it happens); the others are attacks the package withstands that
// no other test makes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { open } from '../index.mjs'
import { packageDir, tempDir } from './helpers.mjs'

// A bug's test is skipped with its reason; STATESAFE_RED12_RUN=1 runs it (to watch it fail).
const bug = (reason) => (process.env.STATESAFE_RED12_RUN ? false : reason)

// The exact decimal value of a JSON number's text, as [digits BigInt, power of ten],
// normalised (no trailing zeros in the digits), so `12345678901234567890e0`,
// `1234567890.123456789e10` and `12345678901234567890` compare equal.
function exact(text) {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text)
  assert.ok(m, `not a JSON number: ${text}`)
  let digits = BigInt(`${m[1]}${m[2]}${m[3] ?? ''}`)
  let exp = Number(m[4] ?? 0) - (m[3] ?? '').length
  while (digits !== 0n && digits % 10n === 0n) {
    digits /= 10n
    exp += 1
  }
  return [digits, digits === 0n ? 0 : exp]
}

// The text of the number at top-level key `key` in a flat JSON object's text.
function numberText(fileText, key) {
  const m = new RegExp(`"${key}":\\s*(-?[0-9][0-9.eE+-]*)`).exec(fileText)
  assert.ok(m, `no number at "${key}" in ${fileText}`)
  return m[1]
}

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

test('a document whose first key is "statesafe" reads back as it was committed', {
  skip: bug('red12: Store::verify_bytes takes any document whose text starts `{"statesafe"` for a sealed envelope (format::looks_sealed) even in a plain file; `replace({statesafe: {v: 2}, x: 1})` is acknowledged, and every later get/update fails with "this reader\'s type refuses it: unknown field `v`, expected one of `format`, `generation`…": an acknowledged write the program can never read or update again (the same for Python, the CLI and a PostgreSQL row)'),
}, async (t) => {
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
  const file = join(tempDir(t), 'state.json')
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
