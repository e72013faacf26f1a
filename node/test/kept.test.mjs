// Numbers no double holds (`1e-400`, `0.10000000000000001`), served as their nearest
// double, copied, written back by `replace`, and moved among equal doubles of other
// texts: each is written with its file text, or the commit is refused (ERANGE) with the
// file left as it was; never the nearest double, silently (node17).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import fc from 'fast-check'
import { open } from '../index.mjs'
import { exact, tempDir } from './helpers.mjs'

const RUNS = Number(process.env.STATESAFE_FC_RUNS ?? 150)

// The file's text without its layout (no string here holds a space).
const compact = (file) => readFileSync(file, 'utf8').replace(/\s/g, '')

// A JSON text parsed with every number kept as its text (no key or string here holds
// a digit), each as its exact value (`exact`), so `1e-400` and `1.0e-400` compare equal
// and `0` and `1e-400` do not.
function exactly(text) {
  const texts = JSON.parse(text.replace(/-?[0-9][0-9.eE+-]*/g, (n) => JSON.stringify(n)))
  return normal(texts)
}
const normal = (v) => {
  if (typeof v === 'string') {
    const [digits, power] = exact(v)
    return `${digits}e${power}`
  }
  if (Array.isArray(v)) return v.map(normal)
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normal(x)]))
}

// The four ways to commit a change: update, updateSync, and replace / replaceSync of
// the document load / loadSync served, changed by `change` (which may return a new one).
const WAYS = ['update', 'updateSync', 'replace', 'replaceSync']
async function commit(store, way, change) {
  if (way === 'update') return store.update(change)
  if (way === 'updateSync') return store.updateSync(change)
  if (way === 'replace') {
    const { value } = await store.load()
    const r = change(value)
    return store.replace(r === undefined ? value : r)
  }
  const { value } = store.loadSync()
  const r = change(value)
  return store.replaceSync(r === undefined ? value : r)
}

// Runs `change` each way on a fresh file holding `body`; returns [way, file, error].
async function eachWay(t, body, change, ways = WAYS) {
  const out = []
  for (const way of ways) {
    const file = join(tempDir(t), 'state.json')
    writeFileSync(file, body)
    let error = null
    try {
      await commit(open(file), way, change)
    } catch (e) {
      error = e
    }
    out.push([way, file, error])
  }
  return out
}

// `change` commits, each way, and the file then holds `expected` (compact).
async function writes(t, body, change, expected, ways = WAYS) {
  for (const [way, file, error] of await eachWay(t, body, change, ways)) {
    assert.equal(error, null, `${way}: ${error}`)
    assert.equal(compact(file), expected, way)
  }
}

// `change` is refused each way (ERANGE), the file left byte for byte.
async function refused(t, body, change, ways = WAYS) {
  for (const [way, file, error] of await eachWay(t, body, change, ways)) {
    assert.ok(error instanceof RangeError && error.code === 'ERANGE', `${way}: ${error}`)
    assert.equal(error.path, file)
    assert.match(error.message, /hint: keep such a number as a string/)
    assert.equal(readFileSync(file, 'utf8'), body, way)
  }
}

// A copy of a kept number beside its original (still in its place) cannot be told from
// a double of the program's own that equals it (review17, node17b): refused, the file
// left as it was. A move (the original's place gone, the double at one new place), and
// the same object at two places, keep the text.
test('a copy of a kept number beside its original is refused; a move or a shared object keeps its text', async (t) => {
  for (const text of ['1e-400', '0.10000000000000001']) {
    await refused(t, `{"x":${text}}`, (s) => void (s.y = s.x))
    // Copied into an array.
    await refused(t, `{"x":${text},"a":[]}`, (s) => void s.a.push(s.x, s.x))
    // A copy of its object with spread.
    await refused(t, `{"a":[{"v":${text}}]}`, (s) => void s.a.push({ ...s.a[0] }))
    // Moved: copied, then its place deleted.
    await writes(t, `{"x":${text}}`, (s) => {
      s.y = s.x
      delete s.x
    }, `{"y":${text}}`)
    await writes(t, `{"x":${text},"a":[]}`, (s) => {
      s.a.push(s.x)
      delete s.x
    }, `{"a":[${text}]}`)
    // Moved to two new places: one of them is a copy (or the program's own double).
    await refused(t, `{"x":${text},"a":[]}`, (s) => {
      s.a.push(s.x, s.x)
      delete s.x
    })
    // An array of objects given one of its objects twice: the same object at two
    // places, so the number is at both.
    await writes(t, `{"a":[{"v":${text}}]}`, (s) => void s.a.push(s.a[0]), `{"a":[{"v":${text}},{"v":${text}}]}`)
    await writes(t, `{"a":{"v":${text}}}`, (s) => void (s.b = s.a), `{"a":{"v":${text}},"b":{"v":${text}}}`)
  }
})

test('an equal double the program wrote without reading the kept number is that double', async (t) => {
  await writes(t, '{"x":1e-400}', (s) => void (s.n = 0), '{"x":1e-400,"n":0}')
  await writes(t, '{"x":0.10000000000000001,"q":[1]}', (s) => void s.q.push(0.1), '{"x":0.10000000000000001,"q":[1,0.1]}')
  // Set over the kept number itself: the program's value.
  await writes(t, '{"x":1e-400}', (s) => void (s.x = 0), '{"x":0}')
})

test('a document load() served keeps its numbers\' texts when passed to replace, changed or not (was: 1e-400 written as 0)', async (t) => {
  const body = '{"x":1e-400,"t":0.10000000000000001,"a":[1e-400,2],"o":{"v":1e-400},"n":1}'
  const replaceWays = ['replace', 'replaceSync']
  await writes(t, body, () => undefined, body, replaceWays)
  await writes(t, body, (s) => void (s.n = 0), body.replace('"n":1', '"n":0'), replaceWays)
  await writes(t, body, (s) => ({ ...s, n: 2 }), body.replace('"n":1', '"n":2'), replaceWays)
  await writes(t, body, (s) => ({ b: s.o, q: s.a }), '{"b":{"v":1e-400},"q":[1e-400,2]}', replaceWays)
  // get() and getSync() serve it too.
  for (const sync of [false, true]) {
    const file = join(tempDir(t), 'state.json')
    writeFileSync(file, body)
    const store = open(file)
    const doc = sync ? store.getSync() : await store.get()
    doc.n = 3
    if (sync) store.replaceSync(doc)
    else await store.replace(doc)
    assert.equal(compact(file), body.replace('"n":1', '"n":3'))
  }
})

test('a document built from scratch means its doubles', async (t) => {
  for (const sync of [false, true]) {
    const file = join(tempDir(t), 'state.json')
    writeFileSync(file, '{"x":1e-400}')
    const store = open(file)
    if (sync) store.replaceSync({ x: 0, y: 0.1 })
    else await store.replace({ x: 0, y: 0.1 })
    assert.equal(compact(file), '{"x":0,"y":0.1}')
  }
})

test('equal doubles of other texts that trade places are refused, never written unmoved (was: reverse() written as it was)', async (t) => {
  for (const body of ['{"a":[0.10000000000000001,0.1]}', '{"a":[1e-400,0]}', '{"a":[1e-400,2e-400]}']) {
    await refused(t, body, (s) => void s.a.reverse())
    await refused(t, body, (s) => void ([s.a[0], s.a[1]] = [s.a[1], s.a[0]]))
    await refused(t, body, (s) => void s.a.sort(() => -1))
    await refused(t, body, (s) => ({ a: [s.a[1], s.a[0]] }))
  }
  // A new object with a copy of each: `{...s, n: 2}` cannot be told from
  // `{...s, x: s.n, n: 2}`.
  await refused(t, '{"x":1e-400,"n":0}', (s) => ({ ...s, n: 2 }))
  // Moved to where an equal double stood.
  await writes(t, '{"a":[0.10000000000000001],"b":[0.1]}', (s) => void (s.b[0] = s.a.pop()), '{"a":[],"b":[0.10000000000000001]}')
  await refused(t, '{"a":[0.10000000000000001,0.1]}', (s) => void s.a.splice(0, 1))
  // Trading places with a number of another double is followed.
  await writes(t, '{"a":[0.10000000000000001,7]}', (s) => void s.a.reverse(), '{"a":[7,0.10000000000000001]}')
})

// The model: the document as number texts; the program: the document served, both
// changed by the same operations. Either the commit is refused (ERANGE) and the file is
// left byte for byte, or the file, read with its exact number texts, is the model.
// Fresh doubles the operations write (7, 0.5) are none of the kept numbers' doubles:
// a program that writes one of those after reading the kept number is refused or taken
// to have moved it (docs/node.md), which a model of texts cannot tell. A copy of a kept
// number beside its original (`copy`, `copyKey`) is refused (the model's texts would
// be the copy's, which statesafe cannot tell from a double of the program's own).
test('moves, copies, swaps and rebuilds never change a number silently (fast-check)', async (t) => {
  const dir = tempDir(t)
  const TEXTS = ['1e-400', '2e-400', '0', '0.10000000000000001', '0.1', '1', '7']
  const FRESH = [7, 0.5]
  const arr = fc.constantFrom('a', 'b')
  const key = fc.constantFrom('p', 'q', 'r')
  const op = fc.oneof(
    fc.tuple(fc.constantFrom('shift', 'pop', 'reverse', 'sort', 'respread'), arr),
    fc.tuple(fc.constantFrom('unshift', 'push'), arr, fc.nat(1)),
    fc.tuple(fc.constantFrom('splice', 'toObj'), arr, fc.nat(5), key),
    fc.tuple(fc.constant('swap'), arr, fc.nat(5), fc.nat(5)),
    fc.tuple(fc.constant('set'), arr, fc.nat(5), fc.nat(1)),
    fc.tuple(fc.constant('copy'), arr, fc.nat(5), arr),
    fc.tuple(fc.constantFrom('toArr', 'copyKey'), key, arr, key),
    fc.constant(['trade']),
  )
  // Applies `list` to `s` ({a, b, o}); `fresh(i)` is a new number, `num(x)` an element's
  // value (for sort).
  const apply = (s, list, fresh, num) => {
    for (const [name, x, i, y] of list) {
      const a = s[x]
      const at = (j) => j % Math.max(1, a.length)
      if (name === 'shift') a.shift()
      else if (name === 'pop') a.pop()
      else if (name === 'reverse') a.reverse()
      else if (name === 'sort') a.sort((u, v) => num(u) - num(v))
      else if (name === 'respread') s[x] = [...a]
      else if (name === 'unshift') a.unshift(fresh(i))
      else if (name === 'push') a.push(fresh(i))
      else if (name === 'splice') a.splice(at(i), 1)
      else if (name === 'toObj' && a.length > 0) s.o[y] = a.splice(at(i), 1)[0]
      else if (name === 'swap' && a.length > 0) [a[at(i)], a[at(y)]] = [a[at(y)], a[at(i)]]
      else if (name === 'set' && a.length > 0) a[at(i)] = fresh(y)
      else if (name === 'copy' && a.length > 0) s[y].push(a[at(i)])
      else if (name === 'toArr' && Object.hasOwn(s.o, x)) {
        s[i].push(s.o[x])
        delete s.o[x]
      } else if (name === 'copyKey' && Object.hasOwn(s.o, x)) s.o[y] = s.o[x]
      else if (name === 'trade') [s.a, s.b] = [s.b, s.a]
    }
  }
  const texts = fc.array(fc.constantFrom(...TEXTS), { maxLength: 4 })
  let n = 0
  const seen = { committed: 0, refused: 0 }
  await fc.assert(
    fc.asyncProperty(texts, texts, fc.dictionary(key, fc.constantFrom(...TEXTS)), fc.array(op, { minLength: 1, maxLength: 4 }), fc.constantFrom(...WAYS), async (a, b, o, list, way) => {
      const file = join(dir, `k${n++}.json`)
      const model = { a: [...a], b: [...b], o: { ...o } }
      const body = JSON.stringify(model).replace(/"(-?[0-9][^"]*)"/g, '$1')
      writeFileSync(file, body)
      apply(model, list, (i) => String(FRESH[i]), Number)
      try {
        await commit(open(file), way, (s) => void apply(s, list, (i) => FRESH[i], (v) => v))
      } catch (e) {
        assert.ok(e instanceof RangeError && e.code === 'ERANGE', `${way} ${body} ${JSON.stringify(list)}: ${e}`)
        assert.equal(readFileSync(file, 'utf8'), body)
        seen.refused++
        return
      }
      seen.committed++
      assert.deepEqual(exactly(readFileSync(file, 'utf8')), normal(model), `${way} ${body} ${JSON.stringify(list)}: wrote ${compact(file)}`)
    }),
    { numRuns: RUNS },
  )
  // Not a test that passes by refusing everything.
  t.diagnostic(`committed ${seen.committed}, refused ${seen.refused}`)
  assert.ok(seen.committed > seen.refused, JSON.stringify(seen))
})

// Reads are noted per store, and an update's own reads per update (review17, node17b);
// reads of a document load() served, made during an update that failed, still count for
// the store's next replace, and an object moved from another store's document keeps
// its numbers' texts.
test('reads of a served document made during a failed update still count for replace', async (t) => {
  const file = join(tempDir(t), 'state.json')
  writeFileSync(file, '{"x":1e-400}')
  const store = open(file)
  const doc = await store.get()
  await assert.rejects(
    store.update(() => {
      doc.y = doc.x
      delete doc.x
      throw new Error('abandoned')
    }),
    /abandoned/,
  )
  await store.replace(doc)
  assert.equal(compact(file), '{"y":1e-400}')
})

test('an object moved from another store\'s document keeps its numbers\' texts', async (t) => {
  const dir = tempDir(t)
  const fa = join(dir, 'a.json')
  const fb = join(dir, 'b.json')
  writeFileSync(fa, '{"cfg":{"rate":0.10000000000000001}}')
  writeFileSync(fb, '{}')
  const a = open(fa)
  const b = open(fb)
  const doc = await a.get()
  await b.update((s) => {
    s.cfg = doc.cfg
  })
  assert.equal(compact(fb), '{"cfg":{"rate":0.10000000000000001}}')
})
