// lost19 (review19py's finding, for Node): a state file deleted (a careless `rm`, a
// cleanup script, a sync tool) while its sidecar shows committed generations is never
// served as the `default` option's document, and no update starts a new life from it:
// every read and update rejects with EDELETED, naming the file, the last generation
// known and the way out. FAILURE_MODES.md row 13 (a "recovery" that resets to
// defaults). A state that never had a commit still serves the default.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { open, StatesafeError } from '../index.mjs'
import { tempDir } from './helpers.mjs'

async function threeCommitsThenRm(t) {
  const file = join(tempDir(t), 'state.json')
  const events = []
  const store = open(file, { default: { n: 0 } })
  for (const type of ['recovered', 'undeleted']) store.on(type, (e) => events.push(e))
  for (let i = 0; i < 3; i++) await store.update((s) => { s.n += 1 })
  assert.deepEqual(await store.get(), { n: 3 })
  unlinkSync(file) // a cleanup, a careless `rm`, a sync tool
  return { file, store, events }
}

function isDeleted(file) {
  return (e) => {
    assert.ok(e instanceof StatesafeError, `expected a StatesafeError, got ${e}`)
    assert.equal(e.code, 'EDELETED', e.message)
    assert.equal(e.kind, 'deleted')
    assert.equal(e.path, file)
    assert.equal(e.generation, 3)
    assert.ok(e.message.includes(file) && /generation 3/.test(e.message), e.message)
    assert.ok(typeof e.newestBackup === 'string' && existsSync(e.newestBackup), e.newestBackup)
    assert.ok(/store\.recover\(\)/.test(e.hint), e.hint)
    assert.ok(!existsSync(file), 'the refusal wrote the file')
    return true
  }
}

test('a deleted state file is not served as the default, and no update starts from it', async (t) => {
  const { file, store } = await threeCommitsThenRm(t)
  await assert.rejects(store.get(), isDeleted(file))
  assert.throws(() => store.getSync(), isDeleted(file))
  await assert.rejects(store.load(), isDeleted(file))
  await assert.rejects(store.update((s) => { s.n += 1 }), isDeleted(file))
  assert.throws(() => store.updateSync((s) => { s.n += 1 }), isDeleted(file))
  await assert.rejects(store.replace({ n: 0 }, { ifGeneration: 0 }), isDeleted(file))
  // A store opened afresh knows it from the sidecar alone.
  await assert.rejects(open(file, { default: { n: 0 } }).get(), isDeleted(file))
})

test('recover() puts the last committed document back', async (t) => {
  const { store, events } = await threeCommitsThenRm(t)
  const event = await store.recover()
  assert.equal(event.type, 'undeleted', JSON.stringify(event))
  assert.equal(event.known, 3)
  assert.equal(event.restoredFrom, 3)
  assert.deepEqual(await store.load(), { value: { n: 3 }, generation: 4 })
  assert.deepEqual(events.map((e) => e.type), ['undeleted'])
})

test('replace() starts over on purpose; a state never committed serves the default', async (t) => {
  const { store } = await threeCommitsThenRm(t)
  assert.equal(await store.replace({ n: 0 }), 4)
  assert.deepEqual(await store.get(), { n: 0 })
  const fresh = open(join(tempDir(t), 'new.json'), { default: { n: 0 } })
  assert.deepEqual(await fresh.get(), { n: 0 })
})
