// A non-integer no double holds (`1e-400`, `0.10000000000000001`) is served as the
// nearest double; its file text follows it when the program moves it (a queue's
// `shift()`, `unshift`, `splice`, `sort`, `reverse`, an object rebuilt under another
// key), and a commit where it cannot be told where the number went is refused, the file
// left as it was: such a number never silently becomes its double (`1e-400` → `0`).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import fc from 'fast-check'
import { open } from '../index.mjs'
import { tempDir } from './helpers.mjs'

// The file's text without its layout (no string here holds a space).
const compact = (file) => readFileSync(file, 'utf8').replace(/\s/g, '')

// Writes `body` as another program would, runs `change` with update() and then, on a
// fresh file, with updateSync(), and returns both files' texts.
async function both(t, body, change) {
  const out = []
  for (const sync of [false, true]) {
    const file = join(tempDir(t), 'state.json')
    writeFileSync(file, body)
    const store = open(file)
    if (sync) store.updateSync(change)
    else await store.update(change)
    out.push(compact(file))
  }
  return out
}

async function moves(t, body, change, expected) {
  for (const text of await both(t, body, change)) assert.equal(text, expected)
}

test('a queue shift keeps the number that moved (was: 1e-400 became 0)', async (t) => {
  await moves(t, '{"q":[1, 1e-400, 2]}\n', (s) => void s.q.shift(), '{"q":[1e-400,2]}')
  await moves(t, '{"q":[1, 0.10000000000000001, 2]}', (s) => void s.q.shift(), '{"q":[0.10000000000000001,2]}')
})

test('unshift, splice, sort and reverse keep the numbers that moved', async (t) => {
  await moves(t, '{"q":[1e-400, 2]}', (s) => void s.q.unshift(7), '{"q":[7,1e-400,2]}')
  await moves(t, '{"q":[1, 1e-400, 2, 3]}', (s) => void s.q.splice(0, 1, 8, 9), '{"q":[8,9,1e-400,2,3]}')
  await moves(t, '{"q":[3, 1e-400, 2]}', (s) => void s.q.sort((a, b) => a - b), '{"q":[1e-400,2,3]}')
  await moves(t, '{"q":[1e-400, 2, 3]}', (s) => void s.q.reverse(), '{"q":[3,2,1e-400]}')
  // Two of the same text move together, or one of them is deleted (node17: was
  // refused; whichever is left, its text is the same).
  await moves(t, '{"q":[1e-400, 1e-400, 5]}', (s) => void s.q.shift(), '{"q":[1e-400,5]}')
  await moves(t, '{"q":[1e-400, 5, 1e-400]}', (s) => void s.q.unshift(7), '{"q":[7,1e-400,5,1e-400]}')
  // Equal doubles elsewhere, in places that did not move, stay what they were.
  await moves(
    t,
    '{"counts":[0, 0], "z": 0, "q":[1, 1e-400, 2]}',
    (s) => void s.q.shift(),
    '{"counts":[0,0],"z":0,"q":[1e-400,2]}',
  )
})

test('a number in an object rebuilt under another key keeps its text', async (t) => {
  await moves(
    t,
    '{"a": {"x": 1e-400, "y": 0.10000000000000001}, "n": 1}',
    (s) => {
      s.b = s.a
      delete s.a
    },
    '{"n":1,"b":{"x":1e-400,"y":0.10000000000000001}}',
  )
  await moves(t, '{"old": [1e-400]}', (s) => ({ renamed: s.old }), '{"renamed":[1e-400]}')
})

test('a number in an object of an array follows that object', async (t) => {
  const body = '{"items":[{"id":1,"v":1e-400},{"id":2,"v":0}]}'
  await moves(t, body, (s) => void s.items.reverse(), '{"items":[{"id":2,"v":0},{"id":1,"v":1e-400}]}')
  await moves(t, body, (s) => void s.items.shift(), '{"items":[{"id":2,"v":0}]}')
  await moves(t, body, (s) => void s.items.unshift({ id: 0, v: 0 }), '{"items":[{"id":0,"v":0},{"id":1,"v":1e-400},{"id":2,"v":0}]}')
  await moves(t, body, (s) => void s.items.splice(1, 1), '{"items":[{"id":1,"v":1e-400}]}')
})

test('a deleted number, or a place set to another value, commits as the program left it', async (t) => {
  await moves(t, '{"q":[1, 1e-400, 2], "z": 0}', (s) => void s.q.splice(1, 1), '{"q":[1,2],"z":0}')
  await moves(t, '{"q":[1, 1e-400, 2]}', (s) => void (s.q[1] = 5), '{"q":[1,5,2]}')
  await moves(t, '{"q":[1e-400, 2]}', (s) => void s.q.shift(), '{"q":[2]}')
  await moves(t, '{"q":[1e-400, 2], "n": 0}', (s) => void (s.n = 4), '{"q":[1e-400,2],"n":4}')
})

test('a commit where it cannot be told which number went where is refused, the file left as it was', async (t) => {
  for (const body of ['{"q":[1e-400, 0, 5]}', '{"q":[1e-400, 2e-400, 5]}']) {
    for (const sync of [false, true]) {
      const file = join(tempDir(t), 'state.json')
      writeFileSync(file, body)
      const store = open(file)
      const change = (s) => void s.q.shift()
      const run = sync ? async () => store.updateSync(change) : () => store.update(change)
      await assert.rejects(run, (e) => {
        assert.ok(e instanceof RangeError && e.code === 'ERANGE', String(e))
        assert.equal(e.path, file)
        assert.equal(e.pointer, '/q/0')
        assert.ok(e.message.includes(file) && e.message.includes('update') && e.message.includes('1e-400'), e.message)
        assert.match(e.message, /\/q\/0/)
        assert.match(e.message, /hint: keep such a number as a string/)
        return true
      })
      assert.equal(readFileSync(file, 'utf8'), body)
      // The lock was released: a later update commits.
      await store.update((s) => void (s.q = []))
      assert.equal(compact(file), '{"q":[]}')
    }
  }
})

// fast-check: arrays of numbers, some of which no double holds (two texts served as 0,
// and a plain 0 beside them), changed by a few array operations. Either the update is
// refused and the file is left byte for byte, or the file holds the numbers the
// operations leave, each with its own text. (Equal doubles that trade places, as in
// `reverse()` of `[0, 1e-400]`, cannot be told apart: the texts are compared as a
// multiset, beside the values in order.)
test('array operations never change a number silently (fast-check)', async (t) => {
  const dir = tempDir(t)
  const TEXTS = ['1e-400', '2e-400', '0', '1', '2']
  const ops = fc.array(
    fc.oneof(
      fc.constant(['shift']),
      fc.constant(['pop']),
      fc.constant(['unshift']),
      fc.constant(['push']),
      fc.constant(['reverse']),
      fc.constant(['sort']),
      fc.tuple(fc.constant('splice'), fc.nat(5)),
      fc.tuple(fc.constant('set'), fc.nat(5)),
    ),
    { minLength: 1, maxLength: 3 },
  )
  // Applies `ops` to `a` (numbers or texts); `num` reads an element's value.
  const apply = (a, list, num, seven) => {
    for (const [op, i] of list) {
      if (op === 'shift') a.shift()
      else if (op === 'pop') a.pop()
      else if (op === 'unshift') a.unshift(seven)
      else if (op === 'push') a.push(seven)
      else if (op === 'reverse') a.reverse()
      else if (op === 'sort') a.sort((x, y) => num(x) - num(y))
      else if (op === 'splice') a.splice(i % Math.max(1, a.length), 1)
      else if (i < a.length) a[i] = seven
    }
    return a
  }
  let n = 0
  await fc.assert(
    fc.asyncProperty(fc.array(fc.constantFrom(...TEXTS), { maxLength: 6 }), ops, async (texts, list) => {
      const file = join(dir, `m${n++}.json`)
      const body = `{"q":[${texts.join(', ')}]}`
      writeFileSync(file, body)
      const truth = apply([...texts], list, Number, '7')
      try {
        await open(file).update((s) => void apply(s.q, list, (x) => x, 7))
      } catch (e) {
        assert.ok(e instanceof RangeError && e.code === 'ERANGE', String(e))
        assert.equal(readFileSync(file, 'utf8'), body)
        return
      }
      const got = compact(file).slice('{"q":['.length, -2)
      const written = got === '' ? [] : got.split(',')
      assert.deepEqual(written.map(Number), truth.map(Number), `${body} ${JSON.stringify(list)}`)
      assert.deepEqual([...written].sort(), [...truth].sort(), `${body} ${JSON.stringify(list)}: wrote [${written}]`)
    }),
    { numRuns: Number(process.env.STATESAFE_FC_RUNS ?? 150) },
  )
})
