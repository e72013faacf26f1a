// Any JSON value survives a commit and a read unchanged (fast-check), through both
// the async and the sync paths.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import fc from 'fast-check'
import { open } from '../index.mjs'
import { tempDir, updateWritesExactly } from './helpers.mjs'

const RUNS = Number(process.env.STATESAFE_FC_RUNS ?? 150)

// JSON as JavaScript holds it, plus integers beyond 2^53 as BigInt (most of which a
// double cannot hold).
const bigIntegers = fc.oneof(
  fc.bigInt({ min: -(2n ** 63n), max: -(2n ** 53n) }),
  fc.bigInt({ min: 2n ** 53n, max: 2n ** 64n - 1n }),
)
const { value: jsonish } = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Object.is(d, -0)),
    fc.integer(),
    fc.string({ unit: 'grapheme' }),
    bigIntegers,
    fc.array(tie('value'), { maxLength: 5 }),
    fc.dictionary(fc.string({ unit: 'binary' }), tie('value'), { maxKeys: 5 }).filter((o) => !('__proto__' in o)),
  ),
}))

// An integer a double holds exactly comes back as a number, whatever it was written as.
function canonical(v) {
  if (typeof v === 'bigint' && BigInt(Number(v)) === v) return Number(v)
  // A JSON object's key order is not part of its value (and JavaScript puts integer-like
  // keys first), so compare objects by sorted keys.
  if (Array.isArray(v)) return v.map(canonical)
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical(v[k])]))
  }
  return v
}

test('fast-check: arbitrary JSON values round-trip exactly (async and sync)', async (t) => {
  const dir = tempDir(t)
  const store = open(join(dir, 'state.json'), { durability: 'none', backups: 0, history: 0 })
  let i = 0
  await fc.assert(
    fc.asyncProperty(jsonish, async (value) => {
      const doc = { value }
      if (i++ % 2 === 0) {
        await store.replace(doc)
        assert.deepStrictEqual(canonical(await store.get()), canonical(doc))
      } else {
        store.updateSync(() => doc)
        assert.deepStrictEqual(canonical(store.getSync()), canonical(doc))
      }
    }),
    { numRuns: RUNS },
  )
})

test('fast-check: doubles keep every bit through the file', async (t) => {
  const store = open(join(tempDir(t), 'd.json'), { durability: 'none', backups: 0, history: 0 })
  await fc.assert(
    fc.asyncProperty(fc.array(fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Object.is(d, -0)), { maxLength: 50 }), async (xs) => {
      await store.replace(xs)
      assert.deepStrictEqual(await store.get(), xs)
    }),
    { numRuns: RUNS },
  )
})

test('fast-check: an update that starts from the store’s copy sees exactly what the file holds', async (t) => {
  const store = open(join(tempDir(t), 'c.json'), { default: {}, durability: 'none', backups: 0, history: 0 })
  await fc.assert(
    fc.asyncProperty(jsonish, fc.double({ noNaN: true, noDefaultInfinity: true }), async (value, d) => {
      await store.update(() => ({ value, d }))
      let seen
      await store.update((s) => void (seen = s))
      const fresh = open(store.path)
      assert.deepStrictEqual(seen, await fresh.get())
      fresh.close()
    }),
    { numRuns: RUNS },
  )
  assert.ok(store.stats().cacheHits > RUNS / 2, JSON.stringify(store.stats()))
})

// Large documents: an update writes the text of the store's copy in pieces (a container
// of 256 children or more a group at a time, see `copyText` in index.js); the file
// must hold byte for byte the text `JSON.stringify` of the whole document gives.
test('fast-check: a large document written in pieces is byte for byte JSON.stringify of it', async (t) => {
  const dir = tempDir(t)
  const options = { default: {}, durability: 'none', backups: 0, history: 0 }
  const stores = { pretty: open(join(dir, 'p.json'), options), compact: open(join(dir, 'c.json'), { ...options, layout: 'compact' }) }
  // JSON that the file holds as `JSON.stringify` writes it (no BigInt, no -0, no
  // number of magnitude 2^53 or more, which the addon writes as the exact integer its
  // double holds), with keys JavaScript orders itself (integer-like first) and
  // `__proto__` as an own key.
  const { value: plain } = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: 'small' },
      fc.constant(null),
      fc.boolean(),
      fc.double({ min: -(2 ** 52), max: 2 ** 52, noNaN: true }).filter((d) => !Object.is(d, -0)),
      fc.string({ unit: 'binary' }),
      fc.array(tie('value'), { maxLength: 4 }),
      fc.dictionary(fc.oneof(fc.string(), fc.constantFrom('__proto__', '0', '7', '10')), tie('value'), { maxKeys: 4 }),
    ),
  }))
  const many = fc.array(plain, { minLength: 256, maxLength: 700 })
  const manyKeys = fc.uniqueArray(fc.tuple(fc.oneof(fc.string(), fc.nat().map(String)), plain), { minLength: 256, maxLength: 500, selector: ([k]) => k })
    .map((entries) => {
      const o = {}
      for (const [k, v] of entries) Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true })
      return o
    })
  const large = fc.oneof(
    many,
    manyKeys,
    fc.tuple(plain, many, manyKeys).map(([a, b, c]) => ({ a, nested: { b, c: [c, a] } })),
    // Children of a few hundred KiB each: groups of one.
    fc.tuple(fc.string({ minLength: 1, maxLength: 3 }), fc.integer({ min: 256, max: 300 })).map(([s, n]) => Array.from({ length: n }, (_, i) => s.repeat(200 + i))),
  )
  await fc.assert(
    fc.asyncProperty(large, async (doc) => {
      for (const [layout, store] of Object.entries(stores)) {
        await updateWritesExactly(store, doc, layout)
      }
    }),
    { numRuns: Math.max(10, Math.floor(RUNS / 5)) },
  )
  assert.ok(stores.pretty.stats().cacheHits > 0)
})
