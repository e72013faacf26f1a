// The update cache of a long-lived store (see "The update cache" in src/tx.rs and
// docs/node.md): an update starts from the store's private copy of what it last
// committed only when the file holds exactly that document, and that copy is never
// shared with the caller nor reused after a failed update.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { rmSync, writeFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fork } from 'node:child_process'
import { Worker } from 'node:worker_threads'
import { open, StatesafeError } from '../index.mjs'
import { tempDir, here, updateWritesExactly } from './helpers.mjs'

const child = join(here, 'fixtures', 'child.cjs')

function exited(proc) {
  return new Promise((resolve, reject) => {
    proc.on('error', reject)
    proc.on('exit', (code, signal) => resolve({ code, signal }))
  })
}

function counts(store) {
  const { cacheHits, cacheMisses } = store.stats()
  return { hits: cacheHits, misses: cacheMisses }
}

test('consecutive updates of one store start from its copy; cache: false never does', async (t) => {
  const dir = tempDir(t)
  const store = open(join(dir, 'a.json'), { default: { n: 0, list: [] } })
  for (let i = 0; i < 5; i++) await store.update((s) => void (s.n += 1, s.list.push(i)))
  // The first update has no copy to offer; each later one finds the file unchanged.
  assert.deepEqual(counts(store), { hits: 4, misses: 0 })
  assert.deepEqual(await store.get(), { n: 5, list: [0, 1, 2, 3, 4] })

  const plain = open(join(dir, 'b.json'), { default: { n: 0 }, cache: false })
  for (let i = 0; i < 3; i++) await plain.update((s) => void (s.n += 1))
  assert.deepEqual(counts(plain), { hits: 0, misses: 0 })
  assert.equal((await plain.get()).n, 3)
  assert.throws(() => open(join(dir, 'c.json'), { cache: 'yes' }), TypeError)
})

test('another process commits between two updates of a long-lived store: the second sees it', async (t) => {
  const file = join(tempDir(t), 'shared.json')
  const store = open(file, { default: { n: 0 } })
  await store.update((s) => void (s.n += 1))
  await store.update((s) => void (s.n += 1)) // a hit: the copy is in use
  const other = fork(child, ['increment', file, '3'], { stdio: 'inherit' })
  assert.deepEqual(await exited(other), { code: 0, signal: null })
  const seen = []
  const { generation } = await store.update((s) => {
    seen.push(s.n)
    s.n += 1
  })
  assert.deepEqual(seen, [5], 'the update started from the other process’s commit')
  assert.equal(generation, 6)
  assert.equal((await store.get()).n, 6)
  assert.deepEqual(counts(store), { hits: 1, misses: 1 })
})

test('another store, a replace and a hand edit in between: each is seen', async (t) => {
  const file = join(tempDir(t), 'shared.json')
  const a = open(file, { default: { n: 0 } })
  const b = open(file)
  await a.update((s) => void (s.n = 1))
  await b.update((s) => void (s.n = 2)) // another store of the same process
  assert.equal((await a.update((s) => void (s.n *= 10))).value.n, 20)
  await a.replace({ n: 7 }) // this store, but not through an update
  assert.equal((await a.update((s) => void (s.n += 1))).value.n, 8)
  // A hand edit that keeps the length and the layout.
  writeFileSync(file, readFileSync(file, 'utf8').replace('"n": 8', '"n": 9'))
  assert.equal((await a.update((s) => void (s.n += 1))).value.n, 10)
  assert.equal((await a.get()).n, 10)
})

test('the same generation reached again by other content (file and sidecar deleted) is a miss', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'state.json')
  const a = open(file, { default: { owner: 'a', n: 0 } })
  await a.update((s) => void (s.n += 1)) // generation 1
  await a.update((s) => void (s.n += 1)) // generation 2, the copy says {owner: a, n: 2}
  rmSync(file)
  rmSync(join(dir, '.state.json.statesafe'), { recursive: true })
  const b = open(file)
  assert.equal(await b.replace({ owner: 'b', n: 100 }), 1)
  assert.equal(await b.replace({ owner: 'b', n: 200 }), 2)
  const seen = []
  const { generation } = await a.update((s) => void seen.push(structuredClone(s)))
  assert.deepEqual(seen, [{ owner: 'b', n: 200 }])
  assert.equal(generation, 2, 'unchanged document: nothing written')
})

test('an updater that throws after changing the document leaves no trace in the next update', async (t) => {
  const store = open(join(tempDir(t), 'state.json'), { default: { n: 0, tags: [] } })
  await store.update((s) => void (s.n = 1))
  await store.update((s) => void (s.n = 2)) // the copy is in the cache now
  await assert.rejects(
    store.update((s) => {
      s.n = 999
      s.tags.push('half-done')
      throw new Error('changed my mind')
    }),
    /changed my mind/,
  )
  await assert.rejects(
    store.update(async (s) => {
      s.n = 998
      await null
      throw new Error('async, also changed my mind')
    }),
    /also changed my mind/,
  )
  // The store has no copy after a failed update: the next one reads the file.
  const before = counts(store)
  const seen = []
  await store.update((s) => void seen.push(structuredClone(s)))
  assert.deepEqual(seen, [{ n: 2, tags: [] }])
  assert.equal(counts(store).hits, before.hits)
  // A value that is not JSON is refused before the commit, the same way.
  await assert.rejects(store.update((s) => void ((s.n = 5), (s.when = new Date()))), TypeError)
  assert.deepEqual(await store.update((s) => void (s.n += 1)).then((r) => r.value), { n: 3, tags: [] })
})

test('a failed commit (refused natively) leaves no cached mutation', async (t) => {
  const schema = { type: 'object', properties: { n: { type: 'integer', maximum: 10 } } }
  const store = open(join(tempDir(t), 'state.json'), { default: { n: 0 }, schema, maxBytes: 4096 })
  await store.update((s) => void (s.n = 1))
  await store.update((s) => void (s.n = 2))
  // Refused by the schema, checked in the addon at commit time (after the quick
  // check, after the copy for the cache was parsed).
  await assert.rejects(
    store.update((s) => void (s.n = 11)),
    (e) => e instanceof StatesafeError && e.code === 'EINVALID',
  )
  await assert.rejects(
    store.update((s) => void (s.pad = 'x'.repeat(8192))),
    (e) => e instanceof StatesafeError && e.code === 'ETOOLARGE',
  )
  const seen = []
  await store.update((s) => {
    seen.push(structuredClone(s))
    s.n = 3
  })
  assert.deepEqual(seen, [{ n: 2 }])
  assert.deepEqual(await store.get(), { n: 3 })
})

test('objects the caller holds (returned, given, put in) never reach the next update', async (t) => {
  const store = open(join(tempDir(t), 'state.json'), { default: { n: 0, items: [] } })
  let given
  const item = { name: 'first', tags: ['a'] }
  const { value: returned } = await store.update((s) => {
    given = s
    s.n = 1
    s.items.push(item)
  })
  assert.equal(returned, given, 'update returns the object its function changed')
  // The caller changes everything it still holds, outside any update.
  returned.n = 100
  given.items.push({ name: 'sneaked in' })
  item.tags.push('changed later')
  const seen = []
  await store.update((s) => {
    seen.push(structuredClone(s))
    s.n += 1
  })
  assert.deepEqual(seen, [{ n: 1, items: [{ name: 'first', tags: ['a'] }] }])
  assert.deepEqual(counts(store), { hits: 1, misses: 0 }, 'the copy was used, and it was untouched')
  // And a function returning a new object: the same.
  const fresh = { n: 50, items: [] }
  await store.update(() => fresh)
  fresh.n = -1
  assert.equal((await store.update((s) => void (s.n += 1))).value.n, 51)
  assert.deepEqual(await store.get(), { n: 51, items: [] })
})

test('many concurrent updates of one store: exact, copies never shared', async (t) => {
  const store = open(join(tempDir(t), 'counter.json'), { default: { n: 0, log: [] }, durability: 'none' })
  await Promise.all(
    Array.from({ length: 60 }, (_, i) =>
      store.update(async (s) => {
        s.n += 1
        await null
        s.log.push(i)
        if (i % 7 === 3) throw new Error('abort this one')
      }).catch((e) => {
        if (e.message !== 'abort this one') throw e
      }),
    ),
  )
  const doc = await store.get()
  const committed = Array.from({ length: 60 }, (_, i) => i).filter((i) => i % 7 !== 3)
  assert.equal(doc.n, committed.length)
  assert.deepEqual([...doc.log].sort((a, b) => a - b), committed)
})

test('updateSync uses the copy an async update left, and makes none itself', async (t) => {
  const store = open(join(tempDir(t), 'state.json'), { default: { n: 0 } })
  await store.update((s) => void (s.n += 1))
  store.updateSync((s) => void (s.n += 1)) // a hit
  store.updateSync((s) => void (s.n += 1)) // nothing offered
  await store.update((s) => void (s.n += 1)) // nothing offered
  await store.update((s) => void (s.n += 1)) // a hit
  assert.deepEqual(counts(store), { hits: 2, misses: 0 })
  assert.equal((await store.get()).n, 5)
})

test('large integers and BigInts bypass the cache and stay exact', async (t) => {
  const store = open(join(tempDir(t), 'state.json'), { default: { n: 0 } })
  await store.update((s) => void (s.big = 2 ** 60)) // a double: written as its exact integer
  await store.update((s) => void (s.id = 2n ** 64n + 1n))
  const seen = []
  await store.update((s) => void seen.push(s.big, s.id))
  assert.deepEqual(seen, [2 ** 60, 2n ** 64n + 1n])
  assert.match(readFileSync(store.path, 'utf8'), /"big": 1152921504606846976,\n {2}"id": 18446744073709551617/)
})

test('two worker threads with stores on one file exclude each other', async (t) => {
  const file = join(tempDir(t), 'state.json')
  await open(file).replace({ n: 0 })
  // 0: nobody inside; 1: worker A holds the lock; 2: A has let go.
  const flag = new Int32Array(new SharedArrayBuffer(4))
  const index = JSON.stringify(join(here, '..', 'index.js'))
  const holder = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads')
     const { open } = require(${index})
     const store = open(workerData.file)
     store.withLock(async () => {
       Atomics.store(workerData.flag, 0, 1)
       parentPort.postMessage('locked')
       await new Promise((resolve) => parentPort.once('message', resolve))
       Atomics.store(workerData.flag, 0, 2)
     }).then(() => parentPort.postMessage('released'))`,
    { eval: true, workerData: { file, flag } },
  )
  const message = (w) => new Promise((resolve, reject) => (w.once('message', resolve), w.once('error', reject)))
  assert.equal(await message(holder), 'locked')
  const updater = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads')
     const { open } = require(${index})
     const store = open(workerData.file, { lockTimeoutMs: 60000 })
     store.update((s) => {
       s.sawHolder = Atomics.load(workerData.flag, 0)
       s.n += 1
     }).then((r) => parentPort.postMessage(r.value))`,
    { eval: true, workerData: { file, flag } },
  )
  const updated = message(updater)
  // Give a broken lock every chance to let the update in while A holds it.
  await new Promise((resolve) => setTimeout(resolve, 500))
  holder.postMessage('let go')
  assert.equal(await message(holder), 'released')
  const value = await updated
  assert.deepEqual(value, { n: 1, sawHolder: 2 }, 'the update ran only after the other worker let go')
  await Promise.all([holder.terminate(), updater.terminate()])
})

test('a getter that answers differently each time: the next update starts from what was written', async (t) => {
  const store = open(join(tempDir(t), 'state.json'), { default: { n: 0 } })
  let calls = 0
  await store.update((s) => {
    Object.defineProperty(s, 'tick', { get: () => ++calls, enumerable: true })
  })
  const written = JSON.parse(readFileSync(store.path, 'utf8')).tick
  const seen = []
  await store.update((s) => {
    seen.push(s.tick)
    s.n += 1
  })
  assert.deepEqual(seen, [written])
  assert.deepEqual(counts(store), { hits: 1, misses: 0 })
  assert.deepEqual(await store.get(), { n: 1, tick: written })
})

test('-0 and a "__proto__" key come back from the copy as from the file', async (t) => {
  const store = open(join(tempDir(t), 'state.json'), { default: {} })
  await store.update((s) => {
    s.zero = -0
    Object.defineProperty(s, '__proto__', { value: { own: true }, enumerable: true, writable: true, configurable: true })
  })
  const fromFile = await store.get()
  const seen = []
  await store.update((s) => void seen.push(s))
  assert.deepEqual(counts(store), { hits: 1, misses: 0 })
  assert.ok(Object.is(seen[0].zero, 0) && Object.is(fromFile.zero, 0))
  assert.equal(Object.getPrototypeOf(seen[0]), Object.prototype)
  assert.deepEqual(Object.getOwnPropertyDescriptor(seen[0], '__proto__').value, { own: true })
  assert.deepEqual(Object.keys(seen[0]), Object.keys(fromFile))
})

test('the copy’s text is written as stringified, at the depth checked; deeper values are parsed natively', async (t) => {
  const dir = tempDir(t)
  const nested = (levels) => {
    let v = 'leaf'
    for (let i = 0; i < levels; i++) v = i % 2 ? { k: v } : [v]
    return v
  }
  for (const [levels, layout] of [[64, 'pretty'], [64, 'compact'], [65, 'pretty'], [300, 'compact']]) {
    const store = open(join(dir, `d${levels}-${layout}.json`), { default: {}, layout })
    await store.update((s) => void (s.deep = nested(levels - 1)))
    const doc = { deep: nested(levels - 1) }
    const text = layout === 'pretty' ? JSON.stringify(doc, null, 2) : JSON.stringify(doc)
    assert.equal(readFileSync(store.path, 'utf8'), `${text}\n`, `${levels} levels, ${layout}`)
    await store.update((s) => void (s.n = 1))
    assert.deepEqual(await open(store.path).get(), { ...doc, n: 1 })
    // The written version is statesafe's own: a fresh store finds nothing to repair.
    const report = await open(store.path).check()
    assert.deepEqual(report.problems, [], JSON.stringify(report))
    store.close()
  }
  // Past the library's limit (512 levels): refused, nothing written.
  const store = open(join(dir, 'too-deep.json'), { default: {} })
  await store.update((s) => void (s.n = 1))
  const before = readFileSync(store.path)
  await assert.rejects(store.update((s) => void (s.deep = nested(600))), StatesafeError)
  assert.deepEqual(readFileSync(store.path), before)
  assert.deepEqual(await store.get(), { n: 1 })
})

test('built-in prototypes a program changed: the file holds what JSON.stringify gives, and the next update starts from it', async (t) => {
  const dir = tempDir(t)
  // An enumerable property inherited by every object (the copy must not take it as
  // the object's own), and an inherited `toJSON` for arrays (which `JSON.stringify`
  // calls, so the text is not the copy's arrays).
  const changes = [
    ['an enumerable Object.prototype property', () => {
      // eslint-disable-next-line no-extend-native
      Object.prototype.inherited = { x: 1 }
      return () => delete Object.prototype.inherited
    }],
    ['Array.prototype.toJSON', () => {
      // eslint-disable-next-line no-extend-native
      Object.defineProperty(Array.prototype, 'toJSON', { value: () => 'from toJSON', configurable: true, writable: true })
      return () => delete Array.prototype.toJSON
    }],
  ]
  for (const [i, [what, change]] of changes.entries()) {
    const store = open(join(dir, `p${i}.json`), { default: { list: [1] } })
    await store.update((s) => void (s.n = 1))
    const undo = change()
    let expected
    try {
      const { value } = await store.update((s) => {
        s.obj = { a: [2] }
        s.n = 2
      })
      expected = `${JSON.stringify(value, null, 2)}\n`
    } finally {
      undo()
    }
    assert.equal(readFileSync(store.path, 'utf8'), expected, what)
    const fromFile = JSON.parse(expected)
    assert.equal(Object.hasOwn(fromFile.obj, 'inherited'), false, what)
    const seen = []
    await store.update((s) => void seen.push(structuredClone(s)))
    assert.deepEqual(seen, [fromFile], `${what}: the next update starts from the file's document`)
    store.close()
  }
})

test('a large document is written in pieces, each the text JSON.stringify of the whole has there', async (t) => {
  // Shapes that take each path of `copyText` in index.js: groups of many children
  // (arrays and objects, integer-like keys, an own `__proto__`), a container of few
  // children one of which is large, children each larger than a piece (groups of one),
  // and text that is not ASCII or is escaped (UTF-8 of two to four bytes, a control
  // character, a quote).
  const dir = tempDir(t)
  const keyed = {}
  for (let i = 0; i < 400; i++) keyed[i % 3 === 0 ? String(i) : `k${i}é`] = { i, tags: ['a', 'ß'] }
  Object.defineProperty(keyed, '__proto__', { value: [1], enumerable: true, writable: true, configurable: true })
  const docs = [
    { version: 1, items: Array.from({ length: 3000 }, (_, i) => ({ id: `res-${i}`, n: i / 7, ok: i % 2 === 0, note: i % 5 ? null : '😀\u0007"' })) },
    Array.from({ length: 300 }, (_, i) => 'x€'.repeat(20_000 + i)),
    { a: { b: { c: keyed, d: [] }, e: {} }, f: 'f', g: Array.from({ length: 256 }, (_, i) => [i, [i]]) },
  ]
  for (const layout of ['pretty', 'compact']) {
    const store = open(join(dir, `${layout}.json`), { default: {}, layout })
    for (const doc of docs) {
      await updateWritesExactly(store, doc, layout)
    }
    // Every update but the first, and the two after a replace that changed the kind
    // of the document (object, array, object), started from the store's copy.
    assert.deepEqual(counts(store), { hits: 3, misses: 2 })
    store.close()
  }
})
