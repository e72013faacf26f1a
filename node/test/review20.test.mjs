// review20: lost19's "a deleted state file is never served as the default" red-teamed
// from Node. Each test failed against main (42982e1) when written, for the reason its
// comment gives (what it printed is in the commit message); all were fixed in
// session 20 and run as ordinary tests. The library tests of the same findings: crates/statesafe/tests/it/review20.rs.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { open } from '../index.mjs'
import { tempDir } from './helpers.mjs'

// review20 finding 5: with history off and no backup yet, the lock record's last
// generation is the only evidence of a commit; a refused update leaves the record it
// wrote at the lock naming a temporary file, and the next holder zeroes that
// generation (taken for a killed writer's). Each attempt a store of its own (a service
// restarted, a script run again). Before the fix: the second update resolved, and
// the file held { counter: 1 } in place of the deleted { counter: 41 }.
test('review20: a refused update does not let the next attempt start from the default', async (t) => {
  const file = join(tempDir(t), 'state.json')
  await open(file, { history: 0 }).replace({ counter: 41 })
  unlinkSync(file) // a cleanup, a careless `rm`, a sync tool
  const attempt = () => open(file, { default: { counter: 0 }, history: 0 })
    .update((s) => { s.counter += 1 })
  await assert.rejects(attempt(), (e) => e.code === 'EDELETED')
  await assert.rejects(attempt(), (e) => e.code === 'EDELETED')
})

// review20 finding 1: a state committed once has no backup, but the history holds
// it whole (generation 1's entry is a snapshot with its checksum). Before the fix:
// recover() rejected with EUNRECOVERABLE, "state file `…` is damaged and could not be
// recovered; there are no backups", right after EDELETED's hint sent the user to it.
test('review20: recover() puts back a state committed once', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const store = open(file, { default: {} })
  await store.replace({ apiKey: 'k-123' })
  unlinkSync(file)
  await assert.rejects(store.get(), (e) => e.code === 'EDELETED')
  const event = await store.recover()
  assert.equal(event?.type, 'undeleted')
  assert.deepEqual(await store.get(), { apiKey: 'k-123' })
})

// review20 finding 9: check() of a deleted file reports it sound. Before the fix:
// { ok: true, exists: false, generation: 0, problems: [] }, as for a file never
// created, while every read rejects with EDELETED.
test('review20: check() does not report a deleted file as sound', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const store = open(file)
  await store.replace({ n: 1 })
  await store.replace({ n: 2 })
  unlinkSync(file)
  await assert.rejects(store.get(), (e) => e.code === 'EDELETED')
  const report = await store.check()
  assert.equal(report.ok, false, JSON.stringify(report))
})
