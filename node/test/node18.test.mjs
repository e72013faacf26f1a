// Session 18 (node18): the two silent changes session 17 left in the following of the
// numbers no double holds.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { open } from '../index.mjs'
import { tempDir } from './helpers.mjs'

const compact = (file) => readFileSync(file, 'utf8').replace(/\s/g, '')

// The refusal of a number copied by value from another store's document: a RangeError
// naming b's file, the place written, the other store's file and number, what to do.
function fromAnotherStore(file, other, where) {
  return (e) => {
    assert.ok(e instanceof RangeError, String(e))
    assert.equal(e.code, 'ERANGE')
    assert.equal(e.path, file)
    assert.match(e.message, new RegExp(`at ${where}`))
    assert.match(e.message, /another store's document/)
    assert.ok(e.message.includes(other), e.message)
    assert.match(e.message, /hint: move the object that holds it/)
    return true
  }
}

// Bug (session 17, left open): a number copied by value from another store's document
// is written as its double. Printed before the fix: "Missing expected rejection." (b's
// file got {"n":1,"x":0} for a's 1e-400: the program wrote the number it read from a
// file, and statesafe changed it).
test('a number copied from another store\'s document is refused, not written as its double', async (t) => {
  const dir = tempDir(t)
  const fa = join(dir, 'a.json')
  const fb = join(dir, 'b.json')
  writeFileSync(fa, '{"x":1e-400}')
  const body = '{"n":1}'
  writeFileSync(fb, body)
  const a = open(fa)
  const b = open(fb)
  const aDoc = await a.get()
  await assert.rejects(
    b.update((s) => {
      s.x = aDoc.x
    }),
    fromAnotherStore(fb, fa, '/x'),
  )
  assert.equal(readFileSync(fb, 'utf8'), body)
  // b's next update starts from its update cache: refused the same way.
  await b.update((s) => void (s.n = 2))
  const cached = readFileSync(fb, 'utf8')
  await assert.rejects(
    b.update((s) => {
      s.y = aDoc.x
    }),
    fromAnotherStore(fb, fa, '/y'),
  )
  assert.equal(readFileSync(fb, 'utf8'), cached)
  // Moving the object that holds it keeps its text.
  const again = await a.get()
  await b.update((s) => {
    s.moved = again
  })
  assert.equal(compact(fb), '{"n":2,"moved":{"x":1e-400}}')
})

test('replace of a document holding a number copied from another store is refused', async (t) => {
  const dir = tempDir(t)
  const fa = join(dir, 'a.json')
  const fb = join(dir, 'b.json')
  writeFileSync(fa, '{"rate":0.10000000000000001}')
  const body = '{"fee":2}'
  writeFileSync(fb, body)
  const a = open(fa)
  const b = open(fb)
  const { value } = a.loadSync()
  assert.throws(() => b.replaceSync({ fee: value.rate }), fromAnotherStore(fb, fa, '/fee'))
  await assert.rejects(b.replace({ fee: value.rate }), fromAnotherStore(fb, fa, '/fee'))
  assert.equal(readFileSync(fb, 'utf8'), body)
})

// A read in another store's update counts too: committed, it counts; failed, its reads
// are dropped (nothing of its document was written).
test('reads in another store\'s update count for the refusal unless that update failed', async (t) => {
  const dir = tempDir(t)
  const fa = join(dir, 'a.json')
  const fb = join(dir, 'b.json')
  writeFileSync(fa, '{"x":1e-400}')
  const a = open(fa)
  const b = open(fb)
  let v
  await assert.rejects(
    a.update((s) => {
      v = s.x
      throw new Error('abandoned')
    }),
    /abandoned/,
  )
  b.replaceSync({ count: v })
  assert.equal(compact(fb), '{"count":0}')
  await a.update((s) => {
    v = s.x
  })
  await assert.rejects(b.replace({ total: v }), fromAnotherStore(fb, fa, '/total'))
  assert.equal(compact(fb), '{"count":0}')
  // A read during b's own async update, by a's update running meanwhile.
  await assert.rejects(
    b.update(async (s) => {
      await a.update((t2) => {
        v = t2.x
      })
      s.total = v
    }),
    fromAnotherStore(fb, fa, '/total'),
  )
  assert.equal(compact(fb), '{"count":0}')
})

// A number of b's own file that equals the double of a number read from another store
// is not the program's write: untouched, it is not refused.
test('an untouched number equal to another store\'s double is written as it was', async (t) => {
  const dir = tempDir(t)
  const fa = join(dir, 'a.json')
  const fb = join(dir, 'b.json')
  writeFileSync(fa, '{"x":1e-400}')
  writeFileSync(fb, '{"n":0,"m":1}')
  const a = open(fa)
  const b = open(fb)
  const aDoc = await a.get()
  // From the file, then from the update cache.
  await b.update((s) => {
    assert.equal(aDoc.x, 0)
    s.m = 2
  })
  assert.equal(compact(fb), '{"n":0,"m":2}')
  await b.update((s) => {
    assert.equal(aDoc.x, 0)
    s.m = 3
  })
  assert.equal(compact(fb), '{"n":0,"m":3}')
  // A document load() served and passed back to replace.
  const doc = b.loadSync().value
  assert.equal(aDoc.x, 0)
  doc.m = 4
  b.replaceSync(doc)
  assert.equal(compact(fb), '{"n":0,"m":4}')
})

// Bug (session 17, left open): a setter of a frozen object's accessor place runs, and
// the write is committed; a plain frozen object refuses it (a TypeError in strict
// code). Printed before the fix: "Missing expected rejection." (the update committed
// "y":0.5).
test('a frozen object of a served document refuses writes to its numbers\' places', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const body = '{"cfg":{"y":0.10000000000000001,"z":1},"a":[0.10000000000000001,2]}'
  writeFileSync(file, body)
  const store = open(file)
  await assert.rejects(
    store.update((s) => {
      Object.freeze(s.cfg)
      s.cfg.y = 0.5
    }),
    (e) => {
      assert.ok(e instanceof TypeError, String(e))
      assert.match(e.message, /'y'/)
      return true
    },
  )
  assert.equal(readFileSync(file, 'utf8'), body)
  // The value never changes; the place still holds the file's number.
  await store.update((s) => {
    Object.freeze(s.cfg)
    Object.freeze(s.a)
    assert.throws(() => (s.cfg.y = 0.5), TypeError)
    assert.throws(() => (s.a[0] = 0.5), /'0'/)
    assert.equal(s.cfg.y, 0.1)
    assert.equal(s.a[0], 0.1)
    s.b = true
  })
  assert.equal(compact(file), '{"cfg":{"y":0.10000000000000001,"z":1},"a":[0.10000000000000001,2],"b":true}')
})

test('sealed and non-extensible objects still accept writes to their numbers\' places', async (t) => {
  const file = join(tempDir(t), 'state.json')
  writeFileSync(file, '{"cfg":{"y":0.10000000000000001,"z":1},"a":[0.10000000000000001,2],"p":{"y":0.10000000000000001}}')
  const store = open(file)
  await store.update((s) => {
    Object.seal(s.cfg)
    Object.seal(s.a)
    Object.preventExtensions(s.p)
    s.cfg.y = 0.5
    s.a[0] = 0.25
    s.p.y = 0.75
  })
  assert.equal(compact(file), '{"cfg":{"y":0.5,"z":1},"a":[0.25,2],"p":{"y":0.75}}')
})
