// Integral doubles JavaScript prints in exponent form (|x| >= 1e21: `JSON.stringify(2 ** 70)`
// is `1.1805916207174113e+21`): in the file they are the exact integer, as every other
// integral double beyond 2^53 is, so an integer another program wrote keeps its text when
// the program does not touch it, and one JavaScript wrote reads back in Python or Rust as
// the integer it is, not as a float with other digits.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { open } from '../index.mjs'
import { tempDir } from './helpers.mjs'

const TWO_70 = '1180591620717411303424'
const MINUS_TWO_80 = '-1208925819614629174706176'
const TWO_100 = '1267650600228229401496703205376'

for (const mode of ['async', 'sync']) {
  test(`${mode}: integers of 1e21 and more that a double holds keep their digits when untouched`, async (t) => {
    const file = join(tempDir(t), 'state.json')
    writeFileSync(file, `{"a": ${TWO_70}, "b": [${MINUS_TWO_80}], "c": {"d": ${TWO_100}}, "n": 0}\n`)
    const store = open(file)
    const doc = await store.get()
    // A double holds each exactly, so each reads as a number (docs/node.md, Integers).
    assert.equal(doc.a, 2 ** 70)
    assert.equal(doc.b[0], -(2 ** 80))
    assert.equal(doc.c.d, 2 ** 100)
    for (let i = 1; i <= 3; i++) {
      // The second and third go through the update cache (the document JavaScript holds).
      if (mode === 'sync') store.updateSync((s) => void (s.n = i))
      else await store.update((s) => void (s.n = i))
      const text = readFileSync(file, 'utf8')
      assert.ok(!/e\+/i.test(text), `exponent form in the file: ${text}`)
      assert.match(text, new RegExp(`"a": ${TWO_70},`))
      assert.match(text, new RegExp(`${MINUS_TWO_80}`))
      assert.match(text, new RegExp(`"d": ${TWO_100}`))
      assert.match(text, new RegExp(`"n": ${i}`))
    }
  })
}

test('an integral double of 1e21 or more that JavaScript wrote is its exact integer in the file', async (t) => {
  const dir = tempDir(t)
  const kinds = { pretty: {}, compact: { layout: 'compact' }, sealed: { format: 'sealed' } }
  for (const [kind, options] of Object.entries(kinds)) {
    const file = join(dir, `${kind}.json`)
    const store = open(file, { default: {}, ...options })
    await store.replace({ a: 2 ** 70, b: -(2 ** 80), c: 1e21, d: 1e300, small: 1.5e-7, x: 0.1 })
    const text = readFileSync(file, 'utf8')
    assert.ok(!/e\+/i.test(text), `exponent form in the file: ${text}`)
    assert.match(text, new RegExp(`"a": ?${TWO_70}`))
    assert.match(text, new RegExp(`"b": ?${MINUS_TWO_80}`))
    assert.match(text, /"c": ?1000000000000000000000[,}\s]/)
    assert.match(text, new RegExp(`"d": ?${BigInt(1e300)}[,}\\s]`)) // 301 digits: the double's exact value
    // Fractions keep their shortest form, exponent included.
    assert.match(text, /"small": ?1\.5e-7/)
    if (kind === 'pretty') {
      // What a reader that keeps integers exact makes of it: Python's json, integers.
      const py = spawnSync('python3', ['-c', 'import json,sys; d=json.load(open(sys.argv[1])); print(type(d["a"]).__name__, d["a"] == 2**70, type(d["c"]).__name__)', file], { encoding: 'utf8' })
      assert.equal(py.stdout, 'int True int\n', py.stderr)
    }
    const back = await store.get()
    assert.deepEqual(back, { a: 2 ** 70, b: -(2 ** 80), c: 1e21, d: 1e300, small: 1.5e-7, x: 0.1 })
    // Through an update and the update cache as well.
    await store.update((s) => void (s.e = 2 ** 90))
    await store.update((s) => void (s.f = 2 ** 91))
    const after = readFileSync(file, 'utf8')
    assert.ok(!/e\+/i.test(after), `exponent form in the file: ${after}`)
    assert.match(after, /"e": ?1237940039285380274899124224[,}\s]/)
    assert.match(after, /"f": ?2475880078570760549798248448[,}\s]/)
  }
})
