// A store's lock is not reentrant: a write or withLock of a store from inside an update
// or withLock of the same store would wait for the lock its own caller holds. It fails
// at once with ENESTED instead (it used to wait the whole lock timeout, then fail with
// ELOCKTIMEOUT naming this very process).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { open } from '../index.mjs'
import { tempDir } from './helpers.mjs'

const isNested = (e) => e.code === 'ENESTED' && /inside a function that holds its lock/.test(e.message)

test('every locking call inside an update of the same store fails at once with ENESTED', async (t) => {
  const store = open(join(tempDir(t), 's.json'), { default: { n: 0 }, lockTimeoutMs: 30_000 })
  await store.replace({ n: 0 })
  const { value } = await store.update(async (s) => {
    await assert.rejects(store.update((d) => d), isNested)
    await assert.rejects(store.replace({ n: 5 }), isNested)
    await assert.rejects(store.withLock(() => 1), isNested)
    await assert.rejects(store.recover(), isNested)
    await assert.rejects(store.restore(1), isNested)
    assert.throws(() => store.updateSync((d) => d), isNested)
    assert.throws(() => store.replaceSync({ n: 5 }), isNested)
    // Reads take no lock.
    assert.deepEqual(await store.get(), { n: 0 })
    s.n = 1
  })
  assert.deepEqual(value, { n: 1 })
  assert.deepEqual(await store.get(), { n: 1 })
})

test('inside updateSync and withLock too; other stores and later calls are not refused', async (t) => {
  const dir = tempDir(t)
  const store = open(join(dir, 's.json'), { default: { n: 0 }, lockTimeoutMs: 30_000 })
  const other = open(join(dir, 'other.json'), { default: { n: 0 } })
  store.updateSync((s) => {
    assert.throws(() => store.updateSync((d) => d), isNested)
    other.updateSync((o) => {
      o.n = 1
    })
    s.n = 1
  })
  let later
  await store.withLock(async () => {
    await assert.rejects(store.update((d) => d), isNested)
    // Work started here that runs after the lock is given up is not refused.
    later = new Promise((resolve) => setTimeout(resolve, 50)).then(() => store.update((s) => {
      s.n += 1
    }))
  })
  await later
  assert.deepEqual(await store.get(), { n: 2 })
  assert.deepEqual(await other.get(), { n: 1 })
})

test('concurrent updates of one store (not nested) still wait for each other', async (t) => {
  const store = open(join(tempDir(t), 's.json'), { default: { n: 0 } })
  await Promise.all(Array.from({ length: 20 }, () => store.update(async (s) => {
    await new Promise((resolve) => setImmediate(resolve))
    s.n += 1
  })))
  assert.deepEqual(await store.get(), { n: 20 })
})

// Outside the functions that hold a lock the AsyncLocalStorage is disabled (on Node 20
// an enabled one hooks every promise of the process); one hold ending while another
// store's function still runs must not disable it under that function.
test('a hold that ends while another store is held leaves that one refusing nested calls', async (t) => {
  const dir = tempDir(t)
  const a = open(join(dir, 'a.json'), { default: { n: 0 }, lockTimeoutMs: 30_000 })
  const b = open(join(dir, 'b.json'), { default: { n: 0 }, lockTimeoutMs: 30_000 })
  let aDone
  const aEnded = new Promise((resolve) => { aDone = resolve })
  const inB = b.update(async (s) => {
    await aEnded
    await assert.rejects(b.update((d) => d), isNested)
    assert.throws(() => b.replaceSync({ n: 5 }), isNested)
    s.n = 1
  })
  await a.update((s) => { s.n = 1 })
  aDone()
  await inB
  // And again once every hold has ended and a new one begins.
  await a.update(async () => {
    await assert.rejects(a.update((d) => d), isNested)
  })
  assert.deepEqual(await a.get(), { n: 1 })
  assert.deepEqual(await b.get(), { n: 1 })
})
