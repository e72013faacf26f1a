// Every method, async and sync twin, every option, events, and the JSON-only rule.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync, statSync, existsSync, readdirSync, rmSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { createRequire } from 'node:module'
import { spawnSync } from 'node:child_process'
import { open, Store, StatesafeError } from '../index.mjs'
import { tempDir, leftoverTemps } from './helpers.mjs'

const require = createRequire(import.meta.url)

test('the CommonJS and ES module entry points are the same objects', () => {
  const cjs = require('../index.js')
  assert.equal(cjs.open, open)
  assert.equal(cjs.Store, Store)
  assert.equal(cjs.StatesafeError, StatesafeError)
})

for (const mode of ['async', 'sync']) {
  const S = mode === 'sync'
  // Calls `name` or `nameSync`, always returning a promise, so one test covers both.
  const call = (store, name, ...args) =>
    S ? Promise.resolve().then(() => store[`${name}Sync`](...args)) : store[name](...args)

  test(`${mode}: get, load, update, replace, generation`, async (t) => {
    const file = join(tempDir(t), 'state.json')
    const store = open(file, { default: { n: 0, items: [] } })
    assert.deepEqual(await call(store, 'get'), { n: 0, items: [] })
    assert.deepEqual(await call(store, 'load'), { value: { n: 0, items: [] }, generation: 0 })
    assert.equal(await call(store, 'generation'), 0)
    assert.equal(existsSync(file), false, 'a default is never written by a read')

    // Mutating in place.
    let r = await call(store, 'update', (s) => {
      s.n += 1
    })
    assert.deepEqual(r, { value: { n: 1, items: [] }, generation: 1 })
    // Returning a new document.
    r = await call(store, 'update', (s) => ({ ...s, n: s.n + 1, items: ['a'] }))
    assert.deepEqual(r, { value: { n: 2, items: ['a'] }, generation: 2 })
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { n: 2, items: ['a'] })

    assert.equal(await call(store, 'replace', { n: 10, items: [] }), 3)
    assert.equal(await call(store, 'replace', { n: 11, items: [] }, { ifGeneration: 3 }), 4)
    const err = await call(store, 'replace', { n: 12, items: [] }, { ifGeneration: 3 }).catch((e) => e)
    assert.ok(err instanceof StatesafeError)
    assert.equal(err.code, 'ECONFLICT')
    assert.equal(err.expected, 3)
    assert.equal(err.actual, 4)
    assert.match(err.hint, /read it again/)
    assert.equal(await call(store, 'generation'), 4)
    assert.deepEqual(await call(store, 'load'), { value: { n: 11, items: [] }, generation: 4 })
    store.close()
  })

  test(`${mode}: an update whose function throws writes nothing and releases the lock`, async (t) => {
    const file = join(tempDir(t), 'state.json')
    const store = open(file, { lockTimeoutMs: 2000 })
    await call(store, 'replace', { n: 1 })
    const before = readFileSync(file)
    const boom = new Error('boom')
    const err = await call(store, 'update', (s) => {
      s.n = 99
      throw boom
    }).catch((e) => e)
    assert.equal(err, boom, 'the function’s own error comes back unchanged')
    assert.deepEqual(readFileSync(file), before)
    // The lock is free again: another store gets it at once.
    const other = open(file, { lockTimeoutMs: 0 })
    assert.equal((await call(other, 'update', (s) => void (s.n = 2))).generation, 2)
    assert.deepEqual(leftoverTemps(file), [])
  })

  test(`${mode}: withLock holds the writers' lock while its function runs`, async (t) => {
    const file = join(tempDir(t), 'state.json')
    const store = open(file)
    await call(store, 'replace', { n: 1 })
    const other = open(file, { lockTimeoutMs: 0 })
    const inside = await call(store, 'withLock', () => {
      assert.equal(store.infoSync().lockHolder.operation, 'withLock')
      // Another store of the same file: refused at once (ENESTED, review21node), not
      // after the lock timeout.
      assert.throws(() => other.updateSync((s) => void (s.n = 5)), { code: 'ENESTED' })
      return 'done'
    })
    assert.equal(inside, 'done')
    assert.equal(store.infoSync().lockHolder, null)
    assert.equal(other.updateSync((s) => void (s.n = 5)).generation, 2)
  })

  test(`${mode}: check, backups, restore, history, diff, documentAt, info, recover`, async (t) => {
    const file = join(tempDir(t), 'state.json')
    const store = open(file, { backups: 3 })
    for (let n = 1; n <= 5; n++) await call(store, 'replace', { n })
    const report = await call(store, 'check')
    assert.equal(report.ok, true)
    assert.equal(report.generation, 5)
    assert.equal(report.backupsValid, 3)
    const { backups, foreign } = await call(store, 'backups')
    assert.deepEqual(backups.map((b) => b.generation), [4, 3, 2])
    assert.deepEqual(foreign, [])
    assert.equal(await call(store, 'restore', 3), 6)
    assert.deepEqual(await call(store, 'get'), { n: 3 })
    const history = await call(store, 'history')
    assert.deepEqual(history.map((h) => h.generation), [1, 2, 3, 4, 5, 6])
    assert.deepEqual(history[5].change, { type: 'restore', from: 3 })
    assert.equal(history[0].writer.pid, process.pid)
    // Each entry's checksum of the document it holds (16 hex digits, as the CLI's
    // `--json`): the restore of generation 3 holds its document, so its checksum.
    for (const h of history) assert.match(h.checksum, /^[0-9a-f]{16}$/, `generation ${h.generation}`)
    assert.equal(new Set(history.slice(0, 5).map((h) => h.checksum)).size, 5)
    assert.equal(history[5].checksum, history[2].checksum)
    // The whole document on the entries that hold one (the first of a segment), as
    // the Rust `HistoryEntry`, Python and the CLI's `--json --patch`; `null` on the
    // others, which hold a patch instead.
    assert.deepEqual(history[0].snapshot, { n: 1 })
    assert.equal(history[0].patch, null)
    for (const h of history.slice(1)) {
      assert.ok('snapshot' in h, `generation ${h.generation}`)
      if (h.snapshot === null) assert.ok(Array.isArray(h.patch), `generation ${h.generation}`)
      else assert.deepEqual(h.snapshot, { n: h.generation === 6 ? 3 : h.generation })
    }
    assert.deepEqual(await call(store, 'diff', 4, 5), [{ op: 'replace', path: '/n', value: 5 }])
    assert.deepEqual(await call(store, 'documentAt', 2), { n: 2 })
    const info = await call(store, 'info')
    assert.equal(info.generation, 6)
    assert.equal(info.exists, true)
    assert.equal(info.settings.format, 'plain')
    assert.equal(info.lockHolder, null)
    assert.equal(await call(store, 'recover'), null, 'a sound file needs no recovery')

    writeFileSync(file, '{"n": 3, "trunc')
    const recovered = []
    store.on('recovered', (e) => recovered.push(e))
    const event = await call(store, 'recover')
    assert.equal(event.type, 'recovered')
    // The live version has no backup of its own: the newest backup (5) is the one it
    // replaced, and the history's patch carries it forward to generation 6.
    assert.equal(event.restoredFrom, 6)
    assert.equal(event.rebuiltFrom, 5)
    assert.equal(event.generation, 8) // the damaged bytes count as generation 7
    assert.deepEqual(await call(store, 'get'), { n: 3 })
    assert.equal(recovered.length, 1)
    assert.ok(existsSync(event.quarantined))

    // A replace over a damaged file: kept in quarantine, and said where.
    writeFileSync(file, '{"n": 3, "cut')
    const quarantined = []
    store.on('quarantined', (e) => quarantined.push(e))
    const generation = await call(store, 'replace', { n: 10 })
    assert.equal(quarantined.length, 1)
    assert.equal(quarantined[0].type, 'quarantined')
    assert.equal(quarantined[0].generation, generation)
    assert.equal(quarantined[0].path, file)
    assert.ok(existsSync(quarantined[0].quarantined))
    assert.equal(readFileSync(quarantined[0].quarantined, 'utf8'), '{"n": 3, "cut')
    assert.match(quarantined[0].message, /kept at/)
  })
}

test('events: commit, recovered (on a read), externalChange; stats', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const store = open(file)
  const seen = []
  for (const type of ['commit', 'recovered', 'externalChange']) store.on(type, (e) => seen.push([type, e.generation]))
  await store.replace({ a: 1 })
  await store.update((s) => void (s.a = 2))
  writeFileSync(file, '{"a": 3}\n') // another program writes a valid document
  assert.deepEqual(await store.get(), { a: 3 })
  await store.update((s) => void (s.a = 4))
  writeFileSync(file, '\0\0\0\0') // power-loss damage
  // The newest provable version: backup 3 carried forward by the history's patch.
  assert.deepEqual(await store.get(), { a: 4 }, 'the last commit comes back')
  assert.deepEqual(seen, [
    ['commit', 1],
    ['commit', 2],
    ['externalChange', 3],
    ['commit', 4],
    ['recovered', 6], // the damaged bytes count as generation 5
  ])
  const stats = store.stats()
  assert.equal(stats.commits, 4)
  assert.equal(stats.recoveries, 1)
  assert.equal(stats.externalChanges, 1)
  assert.equal(stats.commit.count, 4)
  assert.ok(stats.fsync.maxMs > 0)
  assert.ok(stats.lockWaits.count >= 3)
})

test('a listener that throws does not turn a done commit into a failed call', async (t) => {
  // The listener's error is rethrown on its own (an uncaught exception), after the
  // call has reported its commit: run it in a child process to watch that.
  const file = join(tempDir(t), 'state.json')
  const script = `
    const { open } = require(${JSON.stringify(require.resolve('../index.js'))})
    const store = open(${JSON.stringify(file)})
    store.on('commit', () => { throw new Error('listener bug') })
    store.replace({ a: 1 }).then((g) => console.log('committed', g))`
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' })
  assert.match(r.stdout, /committed 1/)
  assert.match(r.stderr, /listener bug/)
  assert.notEqual(r.status, 0)
  assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { a: 1 })
})

test('async update functions run while the lock is held; a rejection writes nothing', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const store = open(file, { default: { n: 0 } })
  const r = await store.update(async (s) => {
    await new Promise((resolve) => setTimeout(resolve, 20))
    s.n = 1
  })
  assert.equal(r.generation, 1)
  await assert.rejects(
    store.update(async (s) => {
      s.n = 2
      await Promise.resolve()
      throw new RangeError('no')
    }),
    RangeError,
  )
  assert.deepEqual(await store.get(), { n: 1 })
  assert.throws(() => store.updateSync(async () => {}), /returned a promise/)
  assert.deepEqual(await store.get(), { n: 1 })
})

test('update without a default on a missing file is ENOENT; with one it creates the file', async (t) => {
  const dir = tempDir(t)
  const bare = open(join(dir, 'a.json'))
  await assert.rejects(bare.update(() => {}), { code: 'ENOENT' })
  assert.throws(() => bare.getSync(), { code: 'ENOENT', name: 'StatesafeError' })
  const withDefault = open(join(dir, 'b.json'), { default: { list: [] } })
  await withDefault.update((s) => void s.list.push(1))
  assert.deepEqual(JSON.parse(readFileSync(join(dir, 'b.json'), 'utf8')), { list: [1] })
})

test('values must be JSON: a TypeError names the place, and nothing is written', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const store = open(file)
  await store.replace({ ok: true })
  const before = readFileSync(file)
  const cyclic = { a: { b: {} } }
  cyclic.a.b.c = cyclic.a
  const sym = {}
  sym[Symbol('k')] = 1
  const cases = [
    [{ a: undefined }, '/a', /undefined/],
    [{ a: [1, () => 1] }, '/a/1', /function/],
    [{ a: Symbol('s') }, '/a', /symbol/],
    [{ n: NaN }, '/n', /NaN/],
    [{ n: -Infinity }, '/n', /Infinity/],
    [cyclic, '/a/b/c', /cycle/],
    [{ when: new Date(0) }, '/when', /Date/],
    [{ m: new Map() }, '/m', /Map/],
    // eslint-disable-next-line no-sparse-arrays
    [{ s: [1, , 3] }, '/s/1', /hole/],
    [{ 'a/b': { '~': undefined } }, '/a~1b/~0', /undefined/],
    [sym, '/', /symbol key/],
  ]
  for (const [value, pointer, what] of cases) {
    for (const attempt of [() => store.replaceSync(value), () => store.updateSync(() => value)]) {
      assert.throws(attempt, (e) => e instanceof TypeError && e.pointer === pointer && what.test(e.message) && e.message.includes(pointer))
    }
    await assert.rejects(store.replace(value), TypeError)
    await assert.rejects(store.update(() => value), TypeError)
  }
  assert.deepEqual(readFileSync(file), before)
  assert.equal(store.generationSync(), 1)
})

test('integers beyond 2^53 keep their value: BigInt on read, exact in the file', async (t) => {
  const file = join(tempDir(t), 'state.json')
  writeFileSync(file, '{"id": 12345678901234567890, "neg": -9007199254740993, "small": 42, "f": 0.1}\n')
  const store = open(file)
  const doc = await store.get()
  assert.equal(doc.id, 12345678901234567890n)
  assert.equal(doc.neg, -9007199254740993n)
  assert.equal(doc.small, 42)
  await store.update((s) => void (s.touched = true)) // `id` and `neg` untouched
  const text = readFileSync(file, 'utf8')
  assert.match(text, /"id": 12345678901234567890/)
  assert.match(text, /"neg": -9007199254740993/)
  await store.update((s) => void (s.id += 1n))
  assert.match(readFileSync(file, 'utf8'), /"id": 12345678901234567891/)
  // Beyond 64 bits too: the workspace keeps number text (serde_json's arbitrary_precision).
  store.replaceSync({ huge: 2n ** 70n + 1n })
  assert.match(readFileSync(file, 'utf8'), /"huge": 1180591620717411303425/)
  assert.equal((await store.get()).huge, 2n ** 70n + 1n)
  // A number JavaScript wrote is a double, so it always comes back as a number.
  await store.replace({ d: 2 ** 53, e: 2 ** 60, f: 1e21 })
  assert.deepEqual(await store.get(), { d: 2 ** 53, e: 2 ** 60, f: 1e21 })
})

test('options: validate, schema, maxBytes, sealed, compact, durability none, private, recovery fail', async (t) => {
  const dir = tempDir(t)
  const v = open(join(dir, 'v.json'), { default: { n: 0 }, validate: (s) => s.n >= 0 || 'n must not be negative' })
  await v.update((s) => void (s.n = 1))
  await assert.rejects(v.update((s) => void (s.n = -1)), { code: 'EINVALID', rule: 'validate', reason: 'n must not be negative' })
  assert.deepEqual(await v.get(), { n: 1 })

  const schema = { type: 'object', properties: { n: { type: 'integer', minimum: 0 } } }
  const s = open(join(dir, 's.json'), { schema })
  await assert.rejects(s.replace({ n: -5 }), { code: 'EINVALID', pointer: '/n', rule: '/properties/n/minimum' })
  assert.throws(() => open(join(dir, 'x.json'), { schema: { type: 'nope' } }), { code: 'EBADSCHEMA' })

  const m = open(join(dir, 'm.json'), { maxBytes: 64 })
  await assert.rejects(m.replace({ s: 'x'.repeat(100) }), { code: 'ETOOLARGE', limit: 64 })

  const sealed = open(join(dir, 'sealed.json'), { format: 'sealed', layout: 'compact', durability: 'none', private: true })
  await sealed.replace({ secret: 1 })
  const raw = readFileSync(join(dir, 'sealed.json'), 'utf8')
  assert.match(raw, /^\{"statesafe":/)
  assert.equal(raw.trimEnd().split('\n').length, 1)
  assert.equal(statSync(join(dir, 'sealed.json')).mode & 0o777, 0o600)
  assert.deepEqual(await sealed.get(), { secret: 1 })

  // A pretty sealed file nests the document inside its envelope's indentation.
  const nested = open(join(dir, 'nested.json'), { format: 'sealed' })
  await nested.replace({ a: { b: [1, 'x\ny'] } })
  assert.match(readFileSync(join(dir, 'nested.json'), 'utf8'), /\n  "state": \{\n    "a": \{\n      "b": \[\n        1,\n        "x\\ny"\n      \]\n    \}\n  \}\n\}\n$/)
  assert.deepEqual(await nested.get(), { a: { b: [1, 'x\ny'] } })

  const f = open(join(dir, 'f.json'), { recovery: 'fail', backups: { keep: 2 }, history: { keep: 10 } })
  await f.replace({ a: 1 })
  await f.replace({ a: 2 })
  writeFileSync(join(dir, 'f.json'), '{"a": ')
  await assert.rejects(f.get(), (e) => e.code === 'ECORRUPT' && e.line === 1 && typeof e.column === 'number')

  assert.throws(() => open(join(dir, 'o.json'), { lockTimeout: 5 }), /unknown option `lockTimeout`/)
  assert.throws(() => open(join(dir, 'o.json'), { durability: 'maybe' }), TypeError)
  assert.throws(() => open(join(dir, 'o.json'), { validate: 3 }), TypeError)
})

test('a closed store refuses every call with ECLOSED', async (t) => {
  const store = open(join(tempDir(t), 'state.json'), { default: {} })
  store.close()
  assert.equal(store.closed, true)
  await assert.rejects(store.get(), { code: 'ECLOSED' })
  await assert.rejects(store.update(() => {}), { code: 'ECLOSED' })
  assert.throws(() => store.replaceSync({}), { code: 'ECLOSED' })
  assert.throws(() => store.stats(), { code: 'ECLOSED' })
})

test('a bookkeeping failure after a commit is its own event, with its cause (red16)', async (t) => {
  // It came as type 'other' with only a message that did not say why.
  const dir = tempDir(t)
  const file = join(dir, 'state.json')
  const store = open(file)
  const failed = []
  store.on('bookkeepingFailed', (e) => failed.push(e))
  await store.replace({ n: 1 })
  const history = join(dir, '.state.json.statesafe', 'history')
  for (const name of readdirSync(history)) {
    rmSync(join(history, name))
    mkdirSync(join(history, name)) // the next history append fails (EISDIR)
  }
  const generation = await store.replace({ n: 2 })
  assert.deepEqual(await store.get(), { n: 2 }) // the commit stands
  assert.equal(failed.length, 1)
  assert.equal(failed[0].type, 'bookkeepingFailed')
  assert.equal(failed[0].path, file)
  assert.equal(failed[0].generation, generation)
  assert.equal(failed[0].what, 'recording history')
  assert.match(failed[0].error, /Is a directory/)
  assert.match(failed[0].message, /Is a directory/)
  store.close()
})
