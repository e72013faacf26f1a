// Session 18 (node18): the two silent changes session 17 left in the following of the
// numbers no double holds.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { open } from '../index.mjs'
import { tempDir } from './helpers.mjs'

const compact = (file) => readFileSync(file, 'utf8').replace(/\s/g, '')

// Bug (session 17, left open): a setter of a frozen object's accessor place runs, and
// the write is committed; a plain frozen object refuses it (a TypeError in strict
// code). Printed before the fix: the update committed {"cfg":{"y":0.5,"z":1}}.
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
