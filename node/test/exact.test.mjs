// A number another program wrote keeps its value (non-negotiable: numbers keep their
// value). What a program is served is the file's number, or the nearest double for a
// non-integer no double holds (JavaScript has no decimal type), or the read fails
// naming the file; an untouched number is written back with exactly its value,
// whatever its spelling (fast-check over every JSON spelling).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import fc from 'fast-check'
import { open } from '../index.mjs'
import { exact, numberText, tempDir } from './helpers.mjs'

const RUNS = Number(process.env.STATESAFE_FC_RUNS ?? 150)


// Every spelling: integer part, optional fraction, optional exponent of either case and
// sign, from 0 to far beyond a double's range and precision.
const numberTexts = fc
  .tuple(
    fc.constantFrom('', '-'),
    fc.oneof(fc.constant('0'), fc.stringMatching(/^[1-9][0-9]{0,24}$/)),
    fc.oneof(fc.constant(''), fc.stringMatching(/^\.[0-9]{1,24}$/)),
    fc.oneof(fc.constant(''), fc.tuple(fc.constantFrom('e', 'E'), fc.constantFrom('', '+', '-'), fc.integer({ min: 0, max: 450 })).map((p) => p.join(''))),
  )
  .map((p) => p.join(''))

test('an untouched number of any spelling keeps its value, and is served as its value where JavaScript can hold it', async (t) => {
  const dir = tempDir(t)
  let i = 0
  await fc.assert(
    fc.asyncProperty(numberTexts, async (written) => {
      const file = join(dir, `n${i++}.json`)
      writeFileSync(file, `{"id": ${written}, "n": 0}\n`)
      const store = open(file, { durability: 'none', history: 0, backups: 0 })
      const served = (await store.get()).id
      const [digits, power] = exact(written)
      if (typeof served === 'bigint') {
        assert.deepEqual(exact(served.toString()), [digits, power], `${written} served as ${served}n`)
      } else if (power >= 0) {
        // An integer served as a number: that number is exactly it.
        assert.ok(Number.isInteger(served), `${written} served as ${served}`)
        assert.deepEqual(exact(BigInt(served).toString()), [digits, power], `${written} served as ${served}`)
      } else {
        assert.ok(Number.isFinite(served), `${written} served as ${served}`)
      }
      await store.update((s) => void (s.n = 1))
      assert.deepEqual(exact(numberText(readFileSync(file, 'utf8'), 'id')), [digits, power])
      store.updateSync((s) => void (s.n = 2))
      const text = readFileSync(file, 'utf8')
      assert.match(text, /"n": ?2/)
      assert.deepEqual(exact(numberText(text, 'id')), [digits, power], `${written} became ${text}`)
    }),
    { numRuns: RUNS },
  )
})

test('a non-integer no double holds is served as the nearest double, and written back only while it is that double', async (t) => {
  const file = join(tempDir(t), 'state.json')
  writeFileSync(file, '{"tiny": 1e-400, "tenth": 0.10000000000000001, "list": [1e-400, 2.5], "n": 0}\n')
  const store = open(file)
  assert.deepEqual(await store.get(), { tiny: 0, tenth: 0.1, list: [0, 2.5], n: 0 })
  await store.update((s) => {
    s.n = 1
    s.list.push(3)
  })
  let text = readFileSync(file, 'utf8')
  assert.equal(numberText(text, 'tiny'), '1e-400')
  assert.equal(numberText(text, 'tenth'), '0.10000000000000001')
  assert.match(text, /\[\s*1e-400,\s*2\.5,\s*3\s*\]/)
  // A value the program changed is its own.
  await store.update((s) => {
    s.tiny = 5
    s.tenth = 0.2
    s.list = [1]
  })
  text = readFileSync(file, 'utf8')
  assert.deepEqual(JSON.parse(text), { tiny: 5, tenth: 0.2, list: [1], n: 1 })
})

test('an integer spelled with an exponent is a BigInt, and written back as it was spelled while untouched', async (t) => {
  const file = join(tempDir(t), 'state.json')
  writeFileSync(file, '{"a": 1e400, "b": 9007199254740993.0, "c": -1E23, "d": 1e21, "n": 0}\n')
  const store = open(file)
  const got = await store.get()
  assert.deepEqual(got, { a: 10n ** 400n, b: 9007199254740993n, c: -(10n ** 23n), d: 1e21, n: 0 })
  store.updateSync((s) => void (s.n = 1))
  const text = readFileSync(file, 'utf8')
  assert.equal(numberText(text, 'a'), '1e400')
  assert.equal(numberText(text, 'b'), '9007199254740993.0')
  assert.equal(numberText(text, 'c'), '-1E23')
  // A changed one is written as its digits.
  await store.update((s) => void (s.a += 1n))
  assert.equal(numberText(readFileSync(file, 'utf8'), 'a'), `1${'0'.repeat(399)}1`)
})

test('a number JavaScript has no value for fails the read, naming the file, the place, the number and what to do', async (t) => {
  for (const written of ['1e99999999999', `${'9'.repeat(400)}.5`]) {
    const file = join(tempDir(t), 'state.json')
    const body = `{"x": {"big": ${written}}, "n": 0}\n`
    writeFileSync(file, body)
    const store = open(file)
    for (const read of [() => store.get(), () => store.update((s) => void (s.n = 1)), async () => store.getSync()]) {
      await assert.rejects(read, (e) => {
        assert.ok(e instanceof RangeError && e.code === 'ERANGE', String(e))
        assert.ok(e.message.includes(file) && e.message.includes('/x/big') && e.message.includes(written.slice(0, 20)), e.message)
        assert.match(e.message, /hint: store such a number as a string/)
        assert.equal(e.pointer, '/x/big')
        return true
      })
    }
    assert.equal(readFileSync(file, 'utf8'), body, 'the file was left as it is')
  }
})
