'use strict'
// statesafe for Node: crash-safe, concurrency-safe JSON state files.
//
// This file is the whole JavaScript layer over the native addon (statesafe.node, built
// from node/src with napi-rs). The addon does every disk operation, lock wait and
// document parse/serialize on threads of its own, never on this thread and never on
// libuv's thread pool; this file checks values, runs the caller's functions, turns
// native failures into StatesafeError, and emits events. See docs/node.md.

const { AsyncLocalStorage } = require('node:async_hooks')
const { EventEmitter } = require('node:events')
const fs = require('node:fs')
const nodePath = require('node:path')
const util = require('node:util')

const native = loadNative()

// The key of a native store `openAsync` opened, for the `Store` constructor.
const OPENED = Symbol('statesafe: opened')

function loadNative() {
  try {
    return require('./statesafe.node')
  } catch (cause) {
    throw new Error(
      'statesafe: cannot load the native addon `statesafe.node`; build it with `npm run build` in the package directory (needs cargo)',
      { cause },
    )
  }
}

// ---------------------------------------------------------------------------------
// Errors

const MARKER = 'STATESAFE_PAYLOAD '

const FIELDS = [
  'kind', 'path', 'op', 'holder', 'waitedMs', 'expected', 'actual', 'line', 'column',
  'reason', 'rule', 'pointer', 'generation', 'committed', 'size', 'limit', 'quarantined',
  'tried', 'newestBackup', 'sidecar', 'depth', 'what',
]

/** Every failure of a store: one class, told apart by its stable `code`. */
class StatesafeError extends Error {
  constructor(payload, options) {
    super(payload.message, options)
    this.name = 'StatesafeError'
    this.code = payload.code
    this.hint = payload.hint ?? null
    for (const field of FIELDS) {
      if (payload[field] !== undefined) this[field] = payload[field]
    }
  }

  /** The error as the CLI prints it: `error: … / caused by: … / hint: …`. */
  describe() {
    return describeError(this)
  }
}

// `error: … / caused by: … / hint: …`, for a StatesafeError and for the TypeError and
// RangeError the package throws with a code (`coded`). A message that ends with its
// own `\nhint: …` line (the ERANGE messages) gives that line as the hint.
function describeError(err) {
  let message = String(err.message)
  const at = err.hint ? message.lastIndexOf(`\nhint: ${err.hint}`) : -1
  if (at >= 0 && at + `\nhint: ${err.hint}`.length === message.length) message = message.slice(0, at)
  const lines = [`error: ${message}`]
  for (let c = err.cause; c; c = c.cause) lines.push(`caused by: ${c.message}`)
  if (err.hint) lines.push(`hint: ${err.hint}`)
  return lines.join('\n')
}

/**
 * A TypeError or RangeError the package throws (ENOTJSON, ERANGE, EBADOPTION,
 * EBADARG) with `code`, the `fields` given, a `hint` (the message's own `hint:` line
 * when it has one, else `hint`, else null) and `describe()`, as a StatesafeError has.
 */
function coded(err, code, fields = {}, hint = null) {
  Object.assign(err, { code }, fields)
  const at = err.message.lastIndexOf('\nhint: ')
  err.hint = at >= 0 ? err.message.slice(at + '\nhint: '.length) : (err.hint ?? hint)
  Object.defineProperty(err, 'describe', { value: describeThis, writable: true, configurable: true, enumerable: false })
  return err
}

function describeThis() {
  return describeError(this)
}

const NOT_JSON_HINT = 'store only null, booleans, finite numbers, strings, arrays, plain objects and BigInt (for integers); convert other values first (a Date to its toISOString(), a Map to an object)'

function causeOf(c) {
  if (!c) return undefined
  if (c.code) return fromPayload(c)
  const err = new Error(c.message)
  if (typeof c.errno === 'number') {
    err.errno = -c.errno
    try {
      err.code = util.getSystemErrorName(-c.errno)
    } catch {
      // An errno Node has no name for: keep the number.
    }
    err.syscall = c.syscall
  }
  return err
}

function fromPayload(p) {
  // ETYPE: a document the addon found not to be JSON (index.js checks values first).
  if (p.typeError) {
    const code = p.code === 'ETYPE' ? 'ENOTJSON' : p.code
    return coded(new TypeError(p.message), code, {}, p.hint ?? (code === 'ENOTJSON' ? NOT_JSON_HINT : null))
  }
  if (p.rangeError) return coded(new RangeError(p.message), 'ERANGE', {}, p.hint ?? null)
  const cause = causeOf(p.cause)
  return new StatesafeError(p, cause ? { cause } : undefined)
}

/** A native failure as the error a caller sees; anything else unchanged. */
function convert(e) {
  if (e instanceof Error && typeof e.message === 'string' && e.message.startsWith(MARKER)) {
    const err = fromPayload(JSON.parse(e.message.slice(MARKER.length)))
    Error.captureStackTrace(err, convert)
    return err
  }
  return e
}

// The locks the running code holds: an `update` or `withLock` runs its function inside
// `holding.run`, with one more `{ store, open }` entry; the entry is closed once the
// lock is given up (work the function started and left running inherits the context,
// and must not be refused later).
const holding = new AsyncLocalStorage()

// On Node 20 an AsyncLocalStorage that has run puts a hook on every promise the whole
// process makes from then on: an `await` anywhere in the program cost 1.8x as much
// after the first update (docs/benchmarks.md, "tidy13"). So `holding` is enabled only
// while some function holds a lock, and disabled again once none does (work a function
// left running reads no context then, which is what it should read).
let holders = 0

// The end of an entry's hold (its lock given up): no longer refused, and `holding`
// disabled when it was the last.
function letGo(entry) {
  if (!entry.open) return
  entry.open = false
  if (!entry.counted) return
  const n = heldFiles.get(entry.key) - 1
  if (n === 0) heldFiles.delete(entry.key)
  else heldFiles.set(entry.key, n)
  if (--holders === 0) holding.disable()
}

// How many functions of this process hold the lock of each file now (an update's or
// withLock's function running, or awaiting), by `fileKey`, whatever store they came
// through: a …Sync write of that file from anywhere (a signal handler, a timer) would
// block the event loop that those functions need to finish, until the lock timeout.
const heldFiles = new Map()

// The file a store's lock belongs to: its real path (the real directory and the
// name, when the file does not exist yet), so that two stores of one file, opened
// through different paths, are one file here; a PostgreSQL URL as it is.
function fileKey(path) {
  if (/^postgres(ql)?:\/\//i.test(path)) return path
  const abs = nodePath.resolve(path)
  try {
    return fs.realpathSync(abs)
  } catch {
    try {
      return nodePath.join(fs.realpathSync(nodePath.dirname(abs)), nodePath.basename(abs))
    } catch {
      return abs
    }
  }
}

function blocked(path, what) {
  return new StatesafeError({
    code: 'ENESTED',
    kind: 'usage',
    message: `${what} of \`${path}\` while a function of this process holds its lock (an update or withLock of this file that has not finished): it would block the event loop that function needs, until the lock timeout`,
    hint: 'use the async method (it waits for the lock without blocking), or make the change inside that update',
    path,
  })
}

function nested(path, what) {
  return new StatesafeError({
    code: 'ENESTED',
    kind: 'usage',
    message: `${what} of \`${path}\` inside a function that holds its lock (an update or withLock of this store): it would wait for that lock until the lock timeout`,
    hint: 'do the change in the function that holds the lock (change its document, or return a new one), or make the call after that update or withLock has finished',
    path,
  })
}

// A call the package refuses before anything is done (an update function that both
// changed its state and returned another document, an async `validate`, ...).
function usage(path, message, hint) {
  return new StatesafeError({ code: 'EUSAGE', kind: 'usage', message, hint, path })
}

/** A bad option: a TypeError with code EBADOPTION naming the option. */
function badOption(name, what) {
  return coded(new TypeError(`statesafe: option \`${name}\` ${what}`), 'EBADOPTION', { option: name }, 'see the options of open() in docs/node.md')
}

/** A bad argument (not an option, not a value of the document): a TypeError with code EBADARG. */
function badArg(message) {
  return coded(new TypeError(`statesafe: ${message}`), 'EBADARG')
}

/** `g` as a generation (a whole number, 0 or more), else EBADARG naming `what`. */
function generationArg(g, what) {
  if (!Number.isSafeInteger(g) || g < 0) {
    throw badArg(`${what} must be a generation (a whole number, 0 or more), not ${typeof g === 'number' ? g : `${typeof g} ${util.inspect(g)}`}`)
  }
  return g
}

function invalid(path, message, reason) {
  return new StatesafeError({
    code: 'EINVALID',
    kind: 'invalid',
    message,
    hint: 'change the update so that the new state satisfies the rule',
    path,
    rule: 'validate',
    pointer: '/',
    reason,
  })
}

// ---------------------------------------------------------------------------------
// Values: JSON only, checked before anything is written

function pointer(path) {
  if (path.length === 0) return '/'
  return path.map((t) => '/' + String(t).replaceAll('~', '~0').replaceAll('/', '~1')).join('')
}

function notJson(path, what) {
  const err = new TypeError(
    `the state at ${pointer(path)} is ${what}; only JSON values can be stored (null, booleans, finite numbers, strings, arrays, plain objects, and BigInt for integers)`,
  )
  return coded(err, 'ENOTJSON', { pointer: pointer(path) }, NOT_JSON_HINT)
}

class Cycle extends Error {}

// The nesting limit of the library (`statesafe::format::MAX_DEPTH`): arrays and
// objects inside each other, the outermost at level 1.
const MAX_DEPTH = 512

// Thrown by `walk` past MAX_DEPTH (a StatesafeError ETOODEEP once `encode` names the
// file). The walk stops there: it never recurses deeper than the library accepts.
function tooDeep() {
  return new StatesafeError({
    code: 'ETOODEEP',
    kind: 'too_deep',
    message: `the document is nested more than ${MAX_DEPTH} levels deep, over statesafe's limit of ${MAX_DEPTH}`,
    hint: 'flatten the document (an array of records instead of records inside records); statesafe holds documents up to that depth, on write and on read alike',
    limit: MAX_DEPTH,
  })
}

const SURROGATE = 'a string with a lone surrogate (half of a character, e.g. an emoji cut by an index), which UTF-8 cannot hold'

// The first own key of array `v` that is not an index, or undefined; `Object.keys`
// lists the indices first, then the named keys.
function namedKey(v) {
  const keys = Object.keys(v)
  return keys.length > v.length ? keys[v.length] : undefined
}

// Walks a value and throws a TypeError naming the first place that is not JSON.
// Collects BigInts as [path, digits]. Ancestors are tracked only past depth 64
// (a cycle always gets there), so ordinary documents pay nothing for cycle checks;
// `strict` re-walks with every level tracked to name the shortest cyclic path.
function walk(v, path, big, ancestors, strict) {
  switch (typeof v) {
    case 'string':
      if (!v.isWellFormed()) throw notJson(path, SURROGATE)
      return
    case 'boolean':
      return
    case 'number':
      if (!Number.isFinite(v)) throw notJson(path, String(v))
      return
    case 'bigint':
      big.push([path.slice(), v.toString()])
      return
    case 'undefined':
      throw notJson(path, 'undefined (use null, or delete the key)')
    case 'function':
      throw notJson(path, `a function${v.name ? ` (${v.name})` : ''}`)
    case 'symbol':
      throw notJson(path, `a symbol (${v.toString()})`)
  }
  if (v === null) return
  if (path.length >= MAX_DEPTH) throw tooDeep()
  if (strict || ancestors.length >= 64) {
    if (ancestors.includes(v)) {
      if (!strict) throw new Cycle()
      throw notJson(path, `a reference to its own ancestor at ${pointer(path.slice(0, ancestors.indexOf(v)))} (a cycle)`)
    }
  }
  ancestors.push(v)
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      path.push(i)
      if (!(i in v)) throw notJson(path, 'a hole in a sparse array')
      walk(v[i], path, big, ancestors, strict)
      path.pop()
    }
    // `JSON.stringify` writes an array's elements only: a named property would be
    // dropped without a word.
    const named = namedKey(v)
    if (named !== undefined) throw notJson(path, `an array with a named property (\`${named}\`), which JSON cannot hold (use an object, or an array of values)`)
    const symbols = Object.getOwnPropertySymbols(v)
    if (symbols.length > 0) throw notJson(path, `an array with a symbol key (${symbols[0].toString()})`)
  } else {
    const proto = Object.getPrototypeOf(v)
    if (proto !== Object.prototype && proto !== null) {
      const name = proto?.constructor?.name || 'object'
      throw notJson(path, `a ${name}, not a plain object (convert it first, e.g. a Date with toISOString())`)
    }
    if (typeof v.toJSON === 'function') throw notJson(path, 'an object with a toJSON method')
    const symbols = Object.getOwnPropertySymbols(v)
    if (symbols.length > 0) throw notJson(path, `an object with a symbol key (${symbols[0].toString()})`)
    for (const k of Object.keys(v)) {
      if (!k.isWellFormed()) throw notJson(path, `an object with a key that is ${SURROGATE}`)
      path.push(k)
      walk(v[k], path, big, ancestors, strict)
      path.pop()
    }
  }
  ancestors.pop()
}

function bigintsAsDigits(_key, v) {
  return typeof v === 'bigint' ? v.toString() : v
}

// What the fast check found: nothing unusual, a number of magnitude 2^53 or more (the
// addon then makes sure it is written as the exact integer the double holds), or
// something that needs the full walk (a value that is not JSON, a BigInt, nesting past
// 64 levels where a cycle may hide).
const PLAIN = 0
const LARGE = 1
const SLOW = 2
const TWO_53 = 2 ** 53

// The nesting depth of the last copy `copyChecked` made (arrays and objects inside
// each other; 0 for a scalar), counted as the library counts it: the addon writes
// the copy's text without parsing it again.
let checkedDepth = 0

// The common case of `walk`, without paths: 3-5x faster on large documents. Anything
// it does not accept as plainly JSON goes to `walk`, which names the place.
function quickCheck(v, depth) {
  switch (typeof v) {
    case 'string':
      return v.isWellFormed() ? PLAIN : SLOW
    case 'boolean':
      return PLAIN
    case 'number':
      if (!Number.isFinite(v)) return SLOW
      return v >= TWO_53 || v <= -TWO_53 ? LARGE : PLAIN
    case 'object':
      break
    default:
      return SLOW
  }
  if (v === null) return PLAIN
  if (depth >= 64) return SLOW
  let found = PLAIN
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      if (!(i in v)) return SLOW
      const r = quickCheck(v[i], depth + 1)
      if (r === SLOW) return SLOW
      found |= r
    }
    if (namedKey(v) !== undefined || Object.getOwnPropertySymbols(v).length > 0) return SLOW
    return found
  }
  const proto = Object.getPrototypeOf(v)
  if (proto !== Object.prototype && proto !== null) return SLOW
  if (typeof v.toJSON === 'function') return SLOW
  if (Object.getOwnPropertySymbols(v).length > 0) return SLOW
  const keys = Object.keys(v)
  for (let i = 0; i < keys.length; i++) {
    if (!keys[i].isWellFormed()) return SLOW
    const r = quickCheck(v[keys[i]], depth + 1)
    if (r === SLOW) return SLOW
    found |= r
  }
  return found
}

// Thrown by `copyChecked` for anything `quickCheck` would send to the full walk.
const NOT_PLAIN = Object.freeze({ notPlain: true })
let copyLarge = false

// `quickCheck` that also builds a copy made of fresh arrays and plain objects with
// data properties only (strings and numbers are immutable and shared). The update
// cache keeps it: it shares no object with the caller's value, and since the text
// written is `JSON.stringify` of the copy, the copy is exactly the document written,
// whatever getters or proxies the caller's value had.
//
// An object is copied with spread, which reads each own enumerable property once
// (a getter included) into a data property of a fresh plain object, in the order
// `Object.keys` and `JSON.stringify` use; its values are then checked and nested
// ones replaced by their copies, enumerated with `for…in` (V8's enum cache makes
// both about twice as fast as `Object.keys` with a property store per key). That
// relies on `prototypesPlain()`, checked by `encode` first: with nothing enumerable
// inherited, `for…in` lists exactly the copy's own keys. An own `__proto__` key is
// an own data property of the copy too, so assigning it sets that property, not the
// prototype. About a fifth of what `JSON.parse` of the text costs.
function copyChecked(v, depth) {
  switch (typeof v) {
    case 'string':
      if (!v.isWellFormed()) throw NOT_PLAIN
      return v
    case 'boolean':
      return v
    case 'number':
      if (!Number.isFinite(v)) throw NOT_PLAIN
      if (v >= TWO_53 || v <= -TWO_53) copyLarge = true
      // -0 is written as 0, and read back as 0.
      return v === 0 ? 0 : v
    case 'object':
      break
    default:
      throw NOT_PLAIN
  }
  if (v === null) return null
  if (depth >= 64) throw NOT_PLAIN
  if (depth >= checkedDepth) checkedDepth = depth + 1
  if (Array.isArray(v)) {
    const n = v.length
    const out = new Array(n)
    for (let i = 0; i < n; i++) {
      if (!(i in v)) throw NOT_PLAIN
      out[i] = copyChecked(v[i], depth + 1)
    }
    if (namedKey(v) !== undefined || Object.getOwnPropertySymbols(v).length > 0) throw NOT_PLAIN
    return out
  }
  const proto = Object.getPrototypeOf(v)
  if (proto !== Object.prototype && proto !== null) throw NOT_PLAIN
  if (Object.getOwnPropertySymbols(v).length > 0) throw NOT_PLAIN
  const out = { ...v }
  for (const k in out) {
    if (!k.isWellFormed()) throw NOT_PLAIN
    const item = out[k]
    switch (typeof item) {
      case 'string':
        if (!item.isWellFormed()) throw NOT_PLAIN
        break
      case 'boolean':
        break
      case 'number':
        if (!Number.isFinite(item)) throw NOT_PLAIN
        if (item >= TWO_53 || item <= -TWO_53) copyLarge = true
        else if (item === 0) out[k] = 0
        break
      case 'object':
        // An own `toJSON` method is a function here, refused below; a data
        // property of that name is data to `JSON.stringify` too.
        if (item !== null) out[k] = copyChecked(item, depth + 1)
        break
      default:
        throw NOT_PLAIN
    }
  }
  return out
}

// Whether `copyChecked` may copy: nothing enumerable inherited from
// `Object.prototype` (which `for…in` would list) and no inherited `toJSON` (which
// `JSON.stringify` would call on the copy's objects or arrays). True unless a
// program changed the built-in prototypes; then values take the full walk.
function prototypesPlain() {
  for (const _ in Object.prototype) return false
  return !('toJSON' in Array.prototype)
}

/**
 * A value as [JSON text, BigInt places, holds a large number, private copy, depth] for
 * the addon; TypeError if it is not JSON. The text is what the file will hold
 * (indented for the pretty layout): a string, or, when the copy was made, its UTF-8
 * bytes in the buffer commits reuse (`copyText`; valid until the next text is made,
 * so handed to the addon before anything else runs). With `wantCopy`, the copy for the update cache
 * (see `copyChecked`), or undefined when the value needs the full walk or holds a
 * large number (then the addon may rewrite the text). `depth` is the nesting depth
 * of the copy, whose text the addon writes as it is (`JSON.stringify` of fresh arrays
 * and plain objects with data properties only is JSON, of that depth); -1 otherwise
 * (the caller's value, whose getters could answer differently while it is
 * stringified), and the addon parses the text.
 */
function encode(value, pretty, wantCopy, file, op) {
  try {
    return encodeValue(value, pretty, wantCopy)
  } catch (e) {
    throw named(e, file, op)
  }
}

// A refusal of a value (ENOTJSON, ETOODEEP) with the file and the operation named.
function named(e, file, op) {
  if ((e?.code === 'ENOTJSON' || e?.code === 'ETOODEEP') && e.path === undefined && file !== undefined) {
    e.message = `statesafe: cannot ${op} \`${file}\`: ${e.message}`
    e.path = file
  }
  return e
}

function encodeValue(value, pretty, wantCopy = false) {
  const indent = pretty ? 2 : undefined
  checkedDepth = 0
  if (wantCopy) {
    let copy
    copyLarge = false
    try {
      if (prototypesPlain()) copy = copyChecked(value, 0)
    } catch (e) {
      if (e !== NOT_PLAIN) throw e
    }
    if (copy !== undefined) {
      return [copyText(copy, pretty), '', copyLarge, copyLarge ? undefined : copy, checkedDepth]
    }
  } else {
    const quick = quickCheck(value, 0)
    // -1: the caller's value may have getters, which `JSON.stringify` calls again.
    if (quick !== SLOW) return [JSON.stringify(value, null, indent), '', quick === LARGE, undefined, -1]
  }
  const big = []
  try {
    walk(value, [], big, [], false)
  } catch (e) {
    if (!(e instanceof Cycle)) throw e
    walk(value, [], [], [], true)
  }
  // Past the quick check (deep nesting): let the addon scan for large numbers itself.
  if (big.length === 0) return [JSON.stringify(value, null, indent), '', true, undefined, -1]
  return [JSON.stringify(value, bigintsAsDigits, indent), JSON.stringify(big), true, undefined, -1]
}

// ---------------------------------------------------------------------------------
// The text handed to the addon
//
// A commit's text goes to the addon as UTF-8 bytes, in a buffer reused from commit to
// commit (the addon copies them during the call, into a buffer of its own it reuses
// too). Handing over a string costs more than its bytes: V8 first flattens the
// string `JSON.stringify` returns (a tree of pieces) into one new string, and a string
// past 128 KiB is a large object, in memory mapped for it alone and page-faulted in
// on every commit (about 0.5 ms per MiB, 80% of an update's page faults).
//
// So the text of the update cache's private copy (plain data: fresh arrays and plain
// objects with data properties only, see `copyChecked`) is made in pieces of about
// PIECE characters: a container with SPLIT or more children is written a group of
// children at a time, each group stringified on its own, its text encoded into the
// buffer and dropped; a container with fewer children, some of them large, is written
// child by child. Each piece is exactly the text `JSON.stringify` of the whole gives
// at that place: a group at depth d is stringified inside d arrays of one element
// (which indent it as the whole would), and the text of those arrays cut off.

const encoder = new TextEncoder()
// A buffer grown past this is not kept for the next commit.
const KEEP_SCRATCH = 16 << 20
let scratch = new Uint8Array(0)
let scratchAt = 0

function grow(need) {
  const next = new Uint8Array(Math.max(need, 2 * scratch.length, 4096))
  next.set(scratch.subarray(0, scratchAt))
  scratch = next
}

// Appends `text` as UTF-8.
function put(text) {
  let { read, written } = encoder.encodeInto(text, scratch.subarray(scratchAt))
  scratchAt += written
  while (read < text.length) {
    // At most 3 bytes per UTF-16 unit.
    grow(scratchAt + 3 * (text.length - read))
    const rest = encoder.encodeInto(text.slice(read), scratch.subarray(scratchAt))
    read += rest.read
    scratchAt += rest.written
  }
}

// The bytes written since `scratchAt` was set to 0; valid until the next commit.
function written() {
  const bytes = scratch.subarray(0, scratchAt)
  if (scratch.length > KEEP_SCRATCH) scratch = new Uint8Array(0)
  scratchAt = 0
  return bytes
}

/** A text as UTF-8 bytes for the addon. */
function utf8(text) {
  scratchAt = 0
  if (scratch.length < text.length) grow(text.length)
  put(text)
  return written()
}

// A container with at least this many children is written in groups of children.
const SPLIT = 256
// About how many characters a piece has: well below V8's large-object size.
const PIECE = 32 << 10

function childCount(v, atLeast) {
  if (Array.isArray(v)) return v.length
  let n = 0
  for (const _ in v) if (++n >= atLeast) break
  return n
}

// Whether `v` is a container worth writing in pieces: SPLIT children or more, or
// (`levels` > 0) a child that is.
function large(v, levels) {
  if (v === null || typeof v !== 'object') return false
  if (childCount(v, SPLIT) >= SPLIT) return true
  if (levels === 0) return false
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) if (large(v[i], levels - 1)) return true
    return false
  }
  for (const k in v) if (large(v[k], levels - 1)) return true
  return false
}

// `JSON.stringify(v, null, gap)` as it appears at nesting depth `d` of a whole.
function textAt(v, d, gap) {
  if (d === 0 || v === null || typeof v !== 'object') return JSON.stringify(v, null, gap)
  let w = v
  for (let k = 0; k < d; k++) w = [w]
  const text = JSON.stringify(w, null, gap)
  // The array at level k (0 outermost) opens with `[`, a newline and the indentation
  // of level k + 1, and closes with a newline, its own indentation and `]`; without a
  // gap, `[` and `]` alone.
  const open = gap ? 2 * d + (gap * d * (d + 1)) / 2 : d
  const close = gap ? 2 * d + (gap * d * (d - 1)) / 2 : d
  return text.slice(open, text.length - close)
}

function newline(d, gap) {
  return gap ? '\n' + ' '.repeat(gap * d) : ''
}

// Writes the text of `v` (plain data) at depth `d` into the buffer.
function putValue(v, d, gap) {
  if (v === null || typeof v !== 'object' || !large(v, 1)) return put(textAt(v, d, gap))
  const array = Array.isArray(v)
  if (childCount(v, SPLIT) >= SPLIT) return putGroups(v, array, d, gap)
  // Few children, some large: one at a time.
  put(array ? '[' : '{')
  let first = true
  const child = (key, x) => {
    put((first ? '' : ',') + newline(d + 1, gap) + (key === null ? '' : JSON.stringify(key) + (gap ? ': ' : ':')))
    first = false
    putValue(x, d + 1, gap)
  }
  if (array) for (let i = 0; i < v.length; i++) child(null, v[i])
  else for (const k in v) child(k, v[k])
  put((first ? '' : newline(d, gap)) + (array ? ']' : '}'))
}

// Writes a container of SPLIT children or more, a group of children at a time, each
// group sized from the text of the one before to about PIECE characters.
function putGroups(v, array, d, gap) {
  const keys = array ? null : Object.keys(v)
  const n = array ? v.length : keys.length
  // The group's own brackets, and the newline and indentation before its `]`.
  const tail = gap ? gap * d + 2 : 1
  put(array ? '[' : '{')
  let per = 16
  for (let i = 0; i < n; ) {
    const end = Math.min(n, i + per)
    let group
    if (array) {
      group = v.slice(i, end)
    } else {
      group = {}
      for (let j = i; j < end; j++) {
        const k = keys[j]
        // An own `__proto__` key stays an own key (assigning it would set the prototype).
        if (k === '__proto__') Object.defineProperty(group, k, { value: v[k], enumerable: true, writable: true, configurable: true })
        else group[k] = v[k]
      }
    }
    const text = textAt(group, d, gap)
    if (i > 0) put(',')
    put(text.slice(1, text.length - tail))
    per = Math.max(1, Math.min(4 * per, Math.floor((per * PIECE) / text.length)))
    i = end
  }
  put(newline(d, gap) + (array ? ']' : '}'))
}

/**
 * `JSON.stringify(copy, null, pretty ? 2 : undefined)` as UTF-8 bytes for the addon,
 * made in pieces (see above). `copy` is plain data made by `copyChecked`, and the
 * prototypes are plain (`prototypesPlain`): `for…in` lists exactly its own keys, in
 * the order `JSON.stringify` uses.
 */
function copyText(copy, pretty) {
  const gap = pretty ? 2 : undefined
  if (!large(copy, 1)) return utf8(JSON.stringify(copy, null, gap))
  scratchAt = 0
  putValue(copy, 0, gap)
  return written()
}

/**
 * `{generation, big, kept?, refused?, value}` text from the addon (src/convert.rs),
 * BigInts put back in place: `[{value, generation}, keep]`, where `keep` is null when
 * the file has no BigInt whose text is kept, else `{ big }`: `big` lists `[path, text,
 * served]` for each BigInt whose file text is written back while the program's value
 * at `path` is still `served` (see `untouched`). The non-integers no double holds
 * (`kept`) are served as their nearest doubles, each place of those doubles tracked
 * (`track`). A number that JavaScript has no value for (`refused`) fails the read,
 * naming `file`.
 */
function decode(text, file, log) {
  const snap = JSON.parse(text)
  if (snap.refused) throw refusedNumber(file, snap.refused[0])
  const kept = []
  for (const [path, digits, written] of snap.big) {
    const n = BigInt(digits)
    if (written !== undefined) kept.push([path, written, n])
    if (path.length === 0) {
      snap.value = n
      continue
    }
    let parent = snap.value
    for (let i = 0; i < path.length - 1; i++) parent = parent[path[i]]
    parent[path[path.length - 1]] = n
  }
  if (snap.kept) track(snap.value, snap.kept, log)
  const keep = kept.length > 0 ? { big: kept } : null
  return [{ value: snap.value, generation: snap.generation }, keep]
}

/** The value at `path` in `value`, or undefined when there is none. */
function at(value, path) {
  let v = value
  for (const t of path) {
    if (v === null || typeof v !== 'object' || !Object.hasOwn(v, t)) return undefined
    v = v[t]
  }
  return v
}

/** A double as a key that keeps `Object.is` apart (`-0` is not `0`). */
function doubleKey(d) {
  return Object.is(d, -0) ? '-0' : String(d)
}

/**
 * Calls `found(path, v, parent)` for each number of `value` whose `doubleKey` is in
 * `keys`, in document order; `parent` is the array or object that holds it (null for
 * the root). `path` is reused: copy it to keep it.
 */
function eachDouble(value, keys, found) {
  const path = []
  const go = (v, parent) => {
    if (typeof v === 'number') {
      if (keys.has(doubleKey(v))) found(path, v, parent)
      return
    }
    if (v === null || typeof v !== 'object') return
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        path.push(i)
        go(v[i], v)
        path.pop()
      }
    } else {
      for (const k of Object.keys(v)) {
        path.push(k)
        go(v[k], v)
        path.pop()
      }
    }
  }
  go(value, null)
}

// ---------------------------------------------------------------------------------
// Following the numbers no double holds
//
// A non-integer no double holds (`1e-400`, `0.10000000000000001`) is served as its
// nearest double, and a JavaScript number has no identity. What has one is the place
// that holds it: so every place of a served document that holds one of those doubles
// (the file's number, and any number equal to its double: a `0` beside a `1e-400`) is
// made an accessor property of its object or array, whose getter returns the double
// and notes the read, and whose setter turns the place back into a plain data property
// holding what was set. Then, at a commit (`follow`):
//
// - a place of the new document that is still such an accessor holds the very number
//   it held when served, wherever its object or array now is (moved, or at two places):
//   it is written with that number's text (a number the double is, as the double);
// - any other place holding one of those doubles holds a value the program wrote
//   there: a copy or a move of a number it read (`s.y = s.x`, `shift()`, `reverse()`,
//   spread, destructuring all read), or a double it made. When no number of that
//   double was read in the time that counts, it is the program's double. When every
//   number of that double that was read had one text: if one of them is still in its
//   place (its accessor is in the new document), the double may be a copy of it or the
//   program's own (a compare reads it too), which cannot be told, so the commit is
//   refused (ERANGE, nothing written; review17: a guess could change a number the
//   program computed); else those numbers left their places, and the new places, if
//   no more than them, are their moves, written with their text (more places: refused).
//   When they had several texts (or some were the plain double), which one it is
//   cannot be told, and the commit is refused: ERANGE, nothing written.
//
// A place whose object was sealed or frozen keeps its accessor (it cannot be
// redefined): setting it keeps the value in the place's record (`rec.set`), served by
// the getter, and the place is the program's value from then on.
//
// The time that counts: an update's function (reads since the update began); for a
// `replace`, since the store's last commit (or its opening), which covers a document
// load() or get() served, read and passed back. Reads by statesafe itself (while it
// checks and writes a value) and by the `validate` option are not noted (`quiet`).
//
// Reads are noted per store (review17): each served document notes its reads in a log
// of the store that served it, and a commit counts only its own store's reads, so a
// read of another store's number (a handler's `a.get()` while `b.update` awaits) gives
// b nothing. An update's own document notes its reads in a log of that update (a
// draft log): when the update ends they are dropped, so a failed update's reads do not
// count for the store's next `replace` (nothing of its document was written; reads of
// documents load() or get() served during it stay, in the store's log). Later reads of
// that document (returned by update, or kept by the program) go to the store's log.
//
// A number copied by value from another store's document (`s.x = aDoc.x`) would so be
// written as its double, changing it (node18). So the reads of every store's documents
// are also kept for the others (`anyReads`, and the drafts of updates running now; an
// update's reads join `anyReads` only if it committed): where a commit's new document
// holds a double the program wrote, and a number of that double with a text was read
// from another store's document in the time that counts, the commit is refused
// (ERANGE, nothing written), never given that text. A place where the document the
// commit replaces held that double already is taken as untouched (a document without
// such numbers of its own has no accessors to tell it by), at the cost of reading that
// document again (the update's snapshot text, else the file) in that case only.

// A stamp counter: reads are stamped with it, an update and a commit start a new count.
let clock = 1
// Greater than 0 while statesafe itself reads a value.
let quiet = 0
// The getter of each accessor a served document's place was made → its record
// `{ d, text, path }` (text: null for a number the double is).
const records = new WeakMap()
// The served documents whose places are accessors (weakly: a track lives as long as
// one of its places, whose getter holds its record, which holds the track).
const tracks = new Set()
/**
 * A log of reads (one per store, and one per update's draft, see above): `reads`,
 * double key → (text, or null) → { at, path }, the last read of a number of that
 * double and text (one entry per pair, so a long-running program keeps as many
 * entries as there are distinct such numbers it was served); `into`, the log its reads
 * go to once its update has ended (null for a store's).
 */
function newLog(into = null, file = null) {
  const log = { reads: new Map(), into, ended: false, id: into === null ? ++storeIds : into.id, file: into === null ? file : into.file }
  if (into !== null) drafts.add(log)
  return log
}

// Each store log's `id` (a draft's is its store's).
let storeIds = 0
/**
 * The reads of every store's served documents, for the other stores' commits (see
 * `foreignReads`): double key → text → store id → { at, path, file }, the last read of
 * a number of that double and text by that store's documents (so as many entries as
 * distinct such numbers read, per store). An update's own reads join at its commit
 * (`endDraft`): a failed update's never do.
 */
const anyReads = new Map()
// The draft logs of the updates running now.
const drafts = new Set()

function noteAny(id, key, text, at, path, file) {
  let m = anyReads.get(key)
  if (!m) anyReads.set(key, (m = new Map()))
  let byStore = m.get(text)
  if (!byStore) m.set(text, (byStore = new Map()))
  const r = byStore.get(id)
  if (r === undefined || r.at <= at) byStore.set(id, { at, path, file })
}

/** The log a read through a track's document is noted in now. */
function logOf(t) {
  let log = t.log
  while (log.into !== null && log.ended) log = log.into
  return log
}

// The places of one double and text a log remembers as read (the oldest are forgotten
// beyond this: a commit then counts fewer of them as moved, and refuses rather than
// guess).
const READ_PLACES = 256

function noteRead(rec) {
  const log = logOf(rec.track)
  let m = log.reads.get(doubleKey(rec.d))
  if (!m) log.reads.set(doubleKey(rec.d), (m = new Map()))
  let r = m.get(rec.text)
  if (!r) m.set(rec.text, (r = { at: clock, path: rec.path, recs: new Map() }))
  r.at = clock
  r.path = rec.path
  r.recs.delete(rec)
  r.recs.set(rec, clock)
  if (r.recs.size > READ_PLACES) r.recs.delete(r.recs.keys().next().value)
  rec.at = clock
  rec.readIn = log
  if (log.into === null && rec.text !== null) noteAny(log.id, doubleKey(rec.d), rec.text, clock, rec.path, log.file)
}

/**
 * Ends a draft log when its update ends: its reads are dropped (a failed update wrote
 * nothing; a committed one's reads are before its commit, and count for no later one),
 * and later reads of the update's document go to its store's log.
 */
function endDraft(draft, committed = false) {
  // Committed, its reads count for other stores' commits (`anyReads`).
  if (committed) {
    for (const [k, m] of draft.reads) {
      for (const [text, r] of m) if (text !== null) noteAny(draft.id, k, text, r.at, r.path, draft.file)
    }
  }
  drafts.delete(draft)
  draft.reads.clear()
  draft.ended = true
}

/**
 * The reads that count for the refusal of a number copied from another store (see
 * `follow`): double key → the last read stamped `since` or later, of a number of that
 * double with a text, in a document served by a store other than the one of id `self`
 * (`{ text, at, path, file }`).
 */
function foreignReads(since, self) {
  const out = new Map()
  const note = (k, text, r, file) => {
    if (text === null || r.at < since) return
    const seen = out.get(k)
    if (seen === undefined || seen.at < r.at) out.set(k, { text, at: r.at, path: r.path, file })
  }
  for (const [k, m] of anyReads) {
    for (const [text, byStore] of m) for (const [id, r] of byStore) if (id !== self) note(k, text, r, r.file)
  }
  for (const d of drafts) {
    if (d.id === self) continue
    for (const [k, m] of d.reads) for (const [text, r] of m) note(k, text, r, d.file)
  }
  return out
}

/** Runs `fn` with reads of tracked places not noted (statesafe's own reads). */
function quietly(fn) {
  quiet++
  try {
    return fn()
  } finally {
    quiet--
  }
}

/**
 * Makes every place of the served document `value` that holds the double of one of
 * the addon's `kept` numbers (`[path, text]`) an accessor (see above), noting its reads
 * in `log`, and registers the document. A document that is itself such a number has no place to make one: it
 * is noted as read (handed to the program).
 */
function track(value, list, log) {
  const texts = new Map(list.map(([path, written]) => [pointer(path), written]))
  const keys = new Set(list.map(([path]) => doubleKey(at(value, path))))
  const t = { keys, log }
  eachDouble(value, keys, (path, d, parent) => {
    const rec = { d, text: texts.get(pointer(path)) ?? null, path: path.slice(), track: t, set: false, value: undefined, at: 0, readIn: null }
    if (parent === null) {
      noteRead(rec)
      return
    }
    const key = path[path.length - 1]
    const get = () => {
      if (rec.set) return rec.value
      if (quiet === 0) noteRead(rec)
      return d
    }
    records.set(get, rec)
    Object.defineProperty(parent, key, {
      get,
      set(v) {
        // A sealed or frozen object (`Object.seal`) made the accessor non-configurable,
        // so it cannot become a data property again; a plain sealed object lets its
        // property be written, so the place keeps what was set (`rec.value`), and is
        // the program's value from then on (`follow`). A plain frozen object refuses
        // the write (a TypeError in strict code, as ES modules and classes are), and
        // so does this place, its value unchanged. (`Object.isFrozen` is also true of
        // a sealed object whose every property is an accessor: one that holds only
        // such numbers refuses too, loudly.)
        if (this === parent && !Object.getOwnPropertyDescriptor(parent, key).configurable) {
          if (Object.isFrozen(parent)) {
            throw new TypeError(`Cannot assign to read only property '${String(key)}' of a frozen ${Array.isArray(parent) ? 'array' : 'object'} (statesafe: the place holds a number no double holds, served as its nearest double)`)
          }
          rec.set = true
          rec.value = v
          return
        }
        Object.defineProperty(this, key, { value: v, writable: true, enumerable: true, configurable: true })
      },
      enumerable: true,
      configurable: true,
    })
  })
  for (const ref of tracks) if (ref.deref() === undefined) tracks.delete(ref)
  tracks.add(new WeakRef(t))
}

/**
 * `big` (the addon's list of `[path, number text]` places, as JSON text, or '') with
 * the places where the file's text of a kept number is written again: a BigInt the
 * program left as it was served (`1e400` is not rewritten as its digits), and each
 * non-integer no double holds wherever it now is (`follow`, counting reads stamped
 * `since` or later in `logs`). `op` names the operation for an error.
 */
function untouched(next, keep, big, since, logs, file, op, start) {
  return quietly(() => {
    const places = keep === null ? [] : keep.big.filter(([path, , served]) => Object.is(at(next, path), served)).map(([path, written]) => [path, written])
    places.push(...follow(next, since, logs, file, op, start))
    if (places.length === 0) return big
    return JSON.stringify([...(big ? JSON.parse(big) : []), ...places])
  })
}

/**
 * Where the file's text of each non-integer no double holds goes in `next` (as
 * `[path, text]`; see "Following the numbers no double holds" above), counting the
 * reads stamped `since` or later; throws (ERANGE) when that cannot be told. Costs a
 * walk of `next` only while a served document with such numbers is alive, or such a
 * number was read since `since`.
 */
function follow(next, since, logs, file, op, start) {
  // The reads that count: double key → text → { path, recs }: the place of the last
  // read in `logs`, and the places read (their records).
  const reads = new Map()
  for (const log of logs) {
    for (const [k, m] of log.reads) {
      for (const [text, r] of m) {
        if (r.at < since) continue
        if (!reads.has(k)) reads.set(k, new Map())
        const into = reads.get(k).get(text) ?? { at: 0, path: r.path, recs: new Set() }
        if (into.at < r.at) [into.at, into.path] = [r.at, r.path]
        for (const [rec, at] of r.recs) if (at >= since) into.recs.add(rec)
        reads.get(k).set(text, into)
      }
    }
  }
  // A place of a kept number read in the time that counts.
  const readNow = (rec) => rec.at >= since && logs.includes(rec.readIn)
  const keys = new Set()
  for (const ref of tracks) {
    const t = ref.deref()
    if (t === undefined) tracks.delete(ref)
    else for (const k of t.keys) keys.add(k)
  }
  for (const k of reads.keys()) keys.add(k)
  const foreign = foreignReads(since, logs[0].id)
  for (const k of foreign.keys()) keys.add(k)
  if (keys.size === 0) return []
  const out = []
  const open = new Map()
  // The places still holding their kept numbers, and those of them read.
  const stayed = new Set()
  const stayedRead = []
  eachDouble(next, keys, (path, d, parent) => {
    const get = parent === null ? undefined : Object.getOwnPropertyDescriptor(parent, path[path.length - 1])?.get
    const rec = get === undefined ? undefined : records.get(get)
    if (rec !== undefined && !rec.set) {
      if (rec.text !== null) out.push([path.slice(), rec.text])
      stayed.add(rec)
      if (rec.text !== null && readNow(rec)) stayedRead.push(rec)
      return
    }
    const key = doubleKey(d)
    if (!open.has(key)) open.set(key, { d, paths: [] })
    open.get(key).paths.push(path.slice())
  })
  // The document the commit replaces (see below), read once if needed.
  let before = null
  const was = (path, d) => {
    if (before === null) before = { value: start() }
    const v = at(before.value, path)
    return typeof v === 'number' && doubleKey(v) === doubleKey(d)
  }
  for (const [key, { d, paths }] of open) {
    // A number of another store's document read in the time that counts, of this
    // double: the program's double at a place where the document replaced held no
    // number of it may be a copy of that number, which cannot be told (and this store
    // has no text to give it: a text is only ever taken from its own documents), or a
    // double of its own: refused. A place where it held that double already is taken
    // as untouched (a served document without such numbers of its own has no accessor
    // to tell it by).
    const other = foreign.get(key)
    if (other !== undefined) {
      const written = paths.filter((path) => !was(path, d))
      if (written.length > 0) throw foreignNumber(file, op, d, other, written)
    }
    const sources = [...(reads.get(key) ?? [])]
    const texts = sources.filter(([text]) => text !== null).map(([text, r]) => ({ text, path: r.path }))
    if (texts.length === 0) continue
    if (texts.length === 1 && sources.length === 1) {
      const text = texts[0].text
      // A kept number read and still in its place: the program's double here may be a
      // copy of it or a double of its own (a compare reads it too), which cannot be
      // told; either guess could change a number (review17).
      const kept = stayedRead.find((rec) => doubleKey(rec.d) === key && rec.text === text)
      if (kept !== undefined) throw copiedNumber(file, op, d, text, kept.path, paths)
      // Moved: the numbers read that left their places, one new place for each.
      let moved = 0
      for (const rec of sources[0][1].recs) if (!stayed.has(rec)) moved++
      if (paths.length > moved) throw copiedNumber(file, op, d, text, texts[0].path, paths, moved)
      for (const path of paths) out.push([path, text])
      continue
    }
    throw movedNumber(file, op, d, texts, paths, sources.length > texts.length)
  }
  return out
}

function copiedNumber(file, op, d, text, from, open, moved) {
  const list = (items, show) => (items.length > 5 ? `${items.slice(0, 5).map(show).join(', ')} and ${items.length - 5} more` : items.map(show).join(', '))
  const shown = text.length > 40 ? `${text.slice(0, 37)}...` : text
  const where =
    moved === undefined
      ? `the file's ${shown} at ${pointer(from)}, served as the nearest double ${doubleKey(d)}, was read and is still in its place`
      : `the file's ${shown} (last read at ${pointer(from)}), served as the nearest double ${doubleKey(d)}, was read, and ${moved} such number${moved === 1 ? '' : 's'} left ${moved === 1 ? 'its place' : 'their places'}`
  const err = new RangeError(
    `statesafe: cannot ${op} \`${file}\`: the new document holds ${doubleKey(d)} at ${list(open, pointer)}, where the program wrote it, and ${where}: whether the program copied that number there or wrote a double of its own (after comparing with it, say) cannot be told; writing ${doubleKey(d)} could change a copy, writing ${shown} could change the program's own number, so nothing was written\nhint: keep such a number as a string, or write a value no kept number equals at ${pointer(open[0])}; to copy the number exactly, change the file with the statesafe CLI or the Python package (which serves it as a Decimal)`,
  )
  return coded(err, 'ERANGE', { path: file, pointer: pointer(from), pointers: [pointer(from)] })
}

function foreignNumber(file, op, d, other, open) {
  const list = (items) => (items.length > 5 ? `${items.slice(0, 5).map(pointer).join(', ')} and ${items.length - 5} more` : items.map(pointer).join(', '))
  const shown = other.text.length > 40 ? `${other.text.slice(0, 37)}...` : other.text
  const err = new RangeError(
    `statesafe: cannot ${op} \`${file}\`: the new document holds ${doubleKey(d)} at ${list(open)}, where the program wrote it, and the ${shown} at ${pointer(other.path)} of another store's document (\`${other.file}\`), served as the nearest double ${doubleKey(d)}, was read ${op === 'update' ? 'during the update' : 'since this store last committed'}: if the program copied that number, writing ${doubleKey(d)} would change it, and whether it did or wrote a double of its own cannot be told, so nothing was written\nhint: move the object that holds it (\`s.cfg = aDoc.cfg\` keeps its numbers' texts), keep such numbers as strings, or copy them exactly with the statesafe CLI or the Python package; a program that computes this double itself can read the other store's numbers before the update (or, for replace, before this store's last commit)`,
  )
  return coded(err, 'ERANGE', { path: file, pointer: pointer(open[0]), pointers: open.map(pointer) })
}

function movedNumber(file, op, d, texts, open, plain) {
  const list = (items, show) => (items.length > 5 ? `${items.slice(0, 5).map(show).join(', ')} and ${items.length - 5} more` : items.map(show).join(', '))
  const shown = (t) => (t.length > 40 ? `${t.slice(0, 37)}...` : t)
  const others = plain ? ` and a ${doubleKey(d)} that is that double` : ''
  const err = new RangeError(
    `statesafe: cannot ${op} \`${file}\`: the file's ${list(texts, (p) => `${shown(p.text)} at ${pointer(p.path)}`)}${others}, served as the nearest double ${doubleKey(d)}, were read, and the new document holds ${doubleKey(d)} at ${list(open, pointer)}, where the program wrote it: which of them (or a double of its own) is there cannot be told; writing ${doubleKey(d)} could change the file's number, so nothing was written\nhint: keep such a number as a string, or change it with a program that keeps it exactly (the statesafe CLI, or the Python package, which serves it as a Decimal); or move numbers of one text only in a commit`,
  )
  return coded(err, 'ERANGE', { path: file, pointer: pointer(texts[0].path), pointers: texts.map((p) => pointer(p.path)) })
}

function refusedNumber(file, [path, written, why]) {
  const shown = written.length > 40 ? `${written.slice(0, 37)}...` : written
  const err = new RangeError(
    `statesafe: cannot read \`${file}\`: the number at ${pointer(path)} (${shown}) is ${why}: JavaScript has no value that keeps it, so it is not served as another; the file was left as it is\nhint: store such a number as a string, or read and change it with a program that keeps it (the statesafe CLI, or the Python package, which serves it as a Decimal)`,
  )
  return coded(err, 'ERANGE', { path: file, pointer: pointer(path) })
}

// ---------------------------------------------------------------------------------
// Options

const OPTIONS = new Set([
  'default', 'lockTimeoutMs', 'durability', 'backups', 'history', 'schema', 'validate',
  'maxBytes', 'minFreeBytes', 'format', 'layout', 'private', 'recovery', 'cache',
])

// The options that are counts (of milliseconds, bytes, backups, generations), alone
// or, for `backups` and `history`, in an object of counts.
const COUNTS = new Set(['lockTimeoutMs', 'maxBytes', 'minFreeBytes', 'backups', 'history'])

function count(name, v) {
  if (!Number.isSafeInteger(v) || v < 0) {
    throw badOption(name, `must be a whole number, 0 or more, not ${util.inspect(v)}`)
  }
}

/**
 * The options as JSON for the addon: [text, the default document, its BigInt places].
 * A bad option is a TypeError with code EBADOPTION naming it: checked here, since
 * `JSON.stringify` would turn Infinity or NaN into null, which the addon reads as not
 * set (the default), silently.
 */
function nativeOptions(options, file) {
  if (options === null || typeof options !== 'object') {
    throw coded(new TypeError('statesafe: options must be an object'), 'EBADOPTION', {}, 'pass the options as a plain object: open(path, { lockTimeoutMs: 5000 })')
  }
  const out = {}
  let doc
  for (const [k, v] of Object.entries(options)) {
    if (!OPTIONS.has(k)) {
      throw coded(new TypeError(`statesafe: unknown option \`${k}\` (known: ${[...OPTIONS].join(', ')})`), 'EBADOPTION', { option: k }, 'check its spelling against the known options')
    }
    if (v === undefined || k === 'validate' || k === 'cache') continue
    if (k === 'default') {
      const [json, big] = encode(v, false, false, file, 'use the default for')
      out.default = JSON.parse(json)
      if (big) out.defaultBig = big
      doc = [json, big]
    } else if (COUNTS.has(k)) {
      // null, like undefined: not set (the default).
      if (v !== null && typeof v === 'object' && (k === 'backups' || k === 'history')) {
        for (const [part, n] of Object.entries(v)) if (n !== undefined && n !== null) count(`${k}.${part}`, n)
      } else if (v !== null) {
        count(k, v)
      }
      out[k] = v
    } else {
      out[k] = v
    }
  }
  if (options.validate !== undefined && typeof options.validate !== 'function') {
    throw badOption('validate', 'must be a function')
  }
  if (options.cache !== undefined && typeof options.cache !== 'boolean') {
    throw badOption('cache', 'must be true or false')
  }
  return [JSON.stringify(out), doc]
}

/** The value of `[json, big]` (as `encode` made them) with its BigInts in place. */
function withBigInts(json, big) {
  return placeBigInts(JSON.parse(json), big ? JSON.parse(big) : [])
}

/** `value` with a BigInt of `digits` at each `[path, digits]` of `list`. */
function placeBigInts(value, list) {
  for (const [path, digits] of list) {
    if (path.length === 0) {
      value = BigInt(digits)
      continue
    }
    let parent = value
    for (let i = 0; i < path.length - 1; i++) parent = parent[path[i]]
    parent[path[path.length - 1]] = BigInt(digits)
  }
  return value
}

/** A snapshot text of the addon (`{generation, big, value}`) as a value, BigInts in place, nothing tracked. */
function plainValue(text) {
  const snap = JSON.parse(text)
  return placeBigInts(snap.value, snap.big)
}

// Marks a BigInt apart from a string of its digits, for `sameJson`.
function bigintMarked(_key, v) {
  return typeof v === 'bigint' ? { '\u0000bigint': v.toString() } : v
}

/** Whether two values are one JSON document (false when either cannot be written). */
function sameJson(a, b) {
  try {
    return JSON.stringify(a, bigintMarked) === JSON.stringify(b, bigintMarked)
  } catch {
    return false
  }
}

function jsonKind(v) {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  return typeof v === 'object' ? 'an object' : 'a scalar'
}

function shown(v) {
  const text = util.inspect(v, { depth: 0, breakLength: Infinity })
  return text.length > 40 ? `${text.slice(0, 37)}...` : text
}

// ---------------------------------------------------------------------------------
// The store

function isThenable(v) {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof v.then === 'function'
}

/** One state file. Create with `open(path, options)`. */
class Store extends EventEmitter {
  #native
  #path
  #default
  #hasDefault
  #validate
  #pretty
  #caching
  // The `clock` when this store last committed (or was opened): a `replace` follows the
  // numbers no double holds read since then (see `follow`).
  #since = ++clock
  // This store's log of reads of the numbers no double holds (see `follow`).
  #reads = newLog()
  // The update cache (see "The update cache" in src/tx.rs): a private copy of the
  // document this store last committed, and the addon's token for it. The copy is
  // made while checking the value (`copyChecked`) and the committed text is made from
  // it, so nothing the caller holds (the object given to or returned from an update,
  // values put into it) is part of it; it is handed to one update only, and dropped
  // when that update fails.
  #cache = null
  // `fileKey` of the path, made at the opening (a later chdir does not change it).
  #fileKey

  constructor(path, options = {}, opened = undefined) {
    super()
    this.#path = storePath(path)
    this.#reads.file = this.#path
    this.#fileKey = fileKey(this.#path)
    const [opts, doc] = nativeOptions(options, this.#path)
    this.#hasDefault = doc !== undefined
    this.#default = this.#hasDefault ? withBigInts(...doc) : undefined
    this.#validate = options.validate
    this.#pretty = options.layout !== 'compact'
    this.#caching = options.cache !== false
    if (opened !== undefined) {
      // Opened by `openAsync` on a thread of the addon, with these very options.
      if (opened.key !== OPENED) {
        throw new TypeError('statesafe: a Store is made by open(path, options) or openAsync(path, options)')
      }
      this.#native = opened.native
      return
    }
    try {
      this.#native = new native.NativeStore(this.#path, opts)
    } catch (e) {
      throw convert(e)
    }
  }

  /** The file's path, made absolute at the opening (a PostgreSQL URL as given). */
  get path() {
    return this.#path
  }

  /** Whether close() was called. */
  get closed() {
    return this.#native.closed
  }

  // Runs a native call, emits what it reported, and converts its failure.
  #sync(call) {
    try {
      return call()
    } catch (e) {
      throw this.#named(convert(e))
    } finally {
      this.#flush()
    }
  }

  async #async(call) {
    try {
      return await call()
    } catch (e) {
      throw this.#named(convert(e))
    } finally {
      this.#flush()
    }
  }

  // The addon's ECLOSED knows no path: named here.
  #named(e) {
    if (e instanceof StatesafeError && e.code === 'ECLOSED' && e.path === undefined) {
      e.message = `the store of \`${this.#path}\` is closed`
      e.path = this.#path
    }
    return e
  }

  #flush() {
    const text = this.#native.takeEvents()
    if (text) for (const e of JSON.parse(text)) this.#emitSafely(e.type, e)
  }

  // A throwing listener must not turn a done commit into a failed call.
  #emitSafely(type, event) {
    try {
      this.emit(type, event)
    } catch (err) {
      process.nextTick(() => {
        throw err
      })
    }
  }

  #committed(generation, operation) {
    this.#since = ++clock
    // Reads before a commit count for no later one.
    for (const [k, m] of this.#reads.reads) {
      for (const [text, r] of m) {
        if (r.at < this.#since) m.delete(text)
        else for (const [rec, at] of r.recs) if (at < this.#since) r.recs.delete(rec)
      }
      if (m.size === 0) this.#reads.reads.delete(k)
    }
    this.#emitSafely('commit', { type: 'commit', path: this.#path, generation, operation })
  }

  #checkRule(state, when) {
    if (!this.#validate) return
    // Its reads of the numbers no double holds are not noted: a check copies nothing.
    const verdict = quietly(() => this.#validate(state))
    if (verdict === true || verdict === undefined) return
    if (isThenable(verdict)) {
      // Its outcome is of no use: a rejection must not be an unhandled one.
      Promise.resolve(verdict).catch(() => {})
      throw usage(
        this.#path,
        `the validate option of \`${this.#path}\` returned a promise (an async function?): validate must be a synchronous function, whose answer is known before a read is served or a commit written; the data was not judged`,
        'make validate synchronous (return true, or a string saying what is wrong); do an asynchronous check before the update, or use the schema option',
      )
    }
    const reason = typeof verdict === 'string' ? verdict : 'refused by the validate option'
    if (when === 'load') {
      throw Object.assign(
        invalid(this.#path, `state file \`${this.#path}\` fails this program's validate rule: ${reason}`, reason),
        { hint: 'the file is valid JSON and was left as it is; fix the data with an update that satisfies the rule, or the rule' },
      )
    }
    throw invalid(this.#path, `new state for \`${this.#path}\` is invalid: validation rule: ${reason}`, reason)
  }

  #snapshot(text) {
    const [snap] = decode(text, this.#path, this.#reads)
    this.#checkRule(snap.value, 'load')
    return snap
  }

  // ENESTED at once when the running code holds this store's lock already (see
  // `holding`): the lock is not reentrant.
  // (Any store of the same file: the lock is the file's.)
  #refuseNested(what) {
    if (holders === 0) return
    const key = this.#key()
    if (holding.getStore()?.some((h) => h.key === key && h.open)) throw nested(this.#path, what)
  }

  // ENESTED at once for a …Sync write while a function of this process holds the
  // file's lock, from whatever code (see `heldFiles`).
  #refuseBlocking(what) {
    this.#refuseNested(what)
    if (heldFiles.size > 0 && heldFiles.has(this.#key())) throw blocked(this.#path, what)
  }

  #key() {
    return this.#fileKey
  }

  // A record of this store's lock held by a function of this process.
  #entry() {
    return { key: this.#key(), open: true, counted: false }
  }

  // Runs `fn` as code that holds this store's lock; `letGo(entry)` once it is given up.
  #holding(entry, fn) {
    if (!entry.counted) {
      entry.counted = true
      holders++
      heldFiles.set(entry.key, (heldFiles.get(entry.key) ?? 0) + 1)
    }
    return holding.run([...(holding.getStore() ?? []), entry], fn)
  }

  #missing(e) {
    if (this.#hasDefault && e instanceof StatesafeError && e.code === 'ENOENT') {
      return { value: structuredClone(this.#default), generation: 0 }
    }
    throw e
  }

  /** The document and its generation, read without a lock. */
  async load() {
    let text
    try {
      text = await this.#async(() => this.#native.load())
    } catch (e) {
      return this.#missing(e)
    }
    return this.#snapshot(text)
  }

  loadSync() {
    let text
    try {
      text = this.#sync(() => this.#native.loadSync())
    } catch (e) {
      return this.#missing(e)
    }
    return this.#snapshot(text)
  }

  /** The document alone, read without a lock. */
  async get() {
    return (await this.load()).value
  }

  getSync() {
    return this.loadSync().value
  }

  /** The current generation, without parsing the document (0 when missing). */
  async generation() {
    return Number(await this.#async(() => this.#native.generation()))
  }

  generationSync() {
    return Number(this.#sync(() => this.#native.generationSync()))
  }

  /**
   * The locked read-modify-write transaction. `fn` gets the document read under the
   * lock; it may change it in place or return a new one, and may be async. If it
   * throws or its promise rejects, nothing is written, the lock is released, and the
   * error is rethrown as it is.
   */
  async update(fn) {
    if (typeof fn !== 'function') throw new TypeError('statesafe: update() takes a function')
    this.#refuseNested('an update')
    const cached = this.#cache
    const tx = await this.#async(() => this.#native.begin('update', cached?.token ?? 0))
    const entry = this.#entry()
    let json, big, large, next, copy, depth
    // The reads of this update's own document (see `endDraft`).
    const draft = newLog(this.#reads)
    try {
      const since = ++clock
      const [value, keep, start, before] = this.#startValue(tx, cached, draft)
      const r = await this.#holding(entry, () => fn(value))
      next = this.#outcome(r, value, before)
      this.#checkRule(next, 'commit')
      ;[json, big, large, copy, depth] = quietly(() => encode(next, this.#pretty, this.#caching, this.#path, 'update'))
      const places = untouched(next, keep, big, since, [this.#reads, draft], this.#path, 'update', start)
      // The addon puts the file's numbers in place: no longer the copy's text.
      if (places !== big) [big, copy, depth] = [places, undefined, -1]
    } catch (e) {
      endDraft(draft)
      letGo(entry)
      await tx.release().catch(() => {})
      throw e
    }
    letGo(entry)
    // A failed commit throws here, and the copy is dropped.
    let reply
    try {
      reply = await this.#async(() => tx.commit(typeof json === 'string' ? utf8(json) : json, big, large, copy !== undefined, depth))
    } catch (e) {
      endDraft(draft)
      throw e
    }
    endDraft(draft, true)
    const [generation, token] = reply.split(' ').map(Number)
    if (token !== 0 && copy !== undefined) this.#cache = { token, value: copy }
    this.#committed(generation, 'update')
    return { value: next, generation }
  }

  // The document an update starts from: the one the addon read under the lock, or,
  // when the addon found that the file holds exactly the document of the cached copy,
  // that copy. Either way the copy leaves the cache (the addon has emptied its side):
  // it is this update's now, or of no more use.
  // Also the numbers whose file text is written back while untouched (see `decode`).
  #startValue(tx, cached, draft) {
    const text = tx.takeSnapshot()
    if (cached && this.#cache === cached) this.#cache = null
    if (text !== null) {
      const [snap, keep] = decode(text, this.#path, draft)
      return [snap.value, keep, () => JSON.parse(text).value, () => plainValue(text)]
    }
    // The file is the cached copy's document (its text, byte for byte), under the lock.
    return [cached.value, null, () => this.#fileValue(), () => plainValue(this.#native.loadSync())]
  }

  /**
   * The new document of an update whose function got `value` and returned `r`
   * (`before()`: the document it was given, as it was). The contract, as in the Python
   * package: the function changes the state in place and returns undefined (or that
   * same object), or leaves it alone and returns a new document of the same JSON kind
   * (a null state may become anything). Anything else is ambiguous (`s =>
   * s.list.push(x)` changes the list AND returns its length, which would replace the
   * whole document): EUSAGE naming the file, nothing written. Costs nothing unless the
   * function returned another value; then one more read of the document given.
   */
  #outcome(r, value, before) {
    if (r === undefined || r === value) return value
    const hint = 'change the state in place and return nothing (an arrow function with a body: `s => { s.list.push(x) }`), or leave it alone and return the new document; replace() sets a document of another kind'
    let same
    try {
      same = quietly(() => sameJson(value, before()))
    } catch {
      // The document given cannot be read again: taken as changed (refused).
      same = false
    }
    if (!same) {
      throw usage(
        this.#path,
        `update of \`${this.#path}\`: the function changed the state in place and also returned ${jsonKind(r)} (${shown(r)}); which of the two is the new document cannot be told, so nothing was written`,
        hint,
      )
    }
    if (value !== null && jsonKind(r) !== jsonKind(value)) {
      throw usage(
        this.#path,
        `update of \`${this.#path}\`: the function returned ${jsonKind(r)} (${shown(r)}) as the new document of a state that is ${jsonKind(value)}; nothing was written`,
        hint,
      )
    }
    return r
  }

  // The document of the file as it is now, for `follow` (the one a commit replaces),
  // or undefined when it cannot be read (then nothing is taken as untouched).
  #fileValue() {
    try {
      return JSON.parse(this.#native.loadSync()).value
    } catch {
      return undefined
    }
  }

  updateSync(fn) {
    if (typeof fn !== 'function') throw new TypeError('statesafe: updateSync() takes a function')
    this.#refuseBlocking('an updateSync')
    const cached = this.#cache
    const tx = this.#sync(() => this.#native.beginSync('update', cached?.token ?? 0))
    const entry = this.#entry()
    let json, big, large, next, depth
    const draft = newLog(this.#reads)
    try {
      const since = ++clock
      const [value, keep, start, before] = this.#startValue(tx, cached, draft)
      let r
      try {
        r = this.#holding(entry, () => fn(value))
      } finally {
        letGo(entry)
      }
      if (isThenable(r)) {
        throw new TypeError('statesafe: the function given to updateSync() returned a promise; use update() for async functions')
      }
      next = this.#outcome(r, value, before)
      this.#checkRule(next, 'commit')
      ;[json, big, large, , depth] = quietly(() => encode(next, this.#pretty, false, this.#path, 'update'))
      const places = untouched(next, keep, big, since, [this.#reads, draft], this.#path, 'update', start)
      if (places !== big) [big, depth] = [places, -1]
    } catch (e) {
      endDraft(draft)
      try {
        tx.releaseSync()
      } catch {
        // The lock is released either way; the caller's error is the one to see.
      }
      throw e
    }
    // No copy for the cache here: a synchronous caller (a CLI, a shutdown path)
    // rarely updates again, and would pay for a copy it never uses.
    let generation
    try {
      generation = Number(this.#sync(() => tx.commitSync(utf8(json), big, large, false, depth)).split(' ')[0])
    } catch (e) {
      endDraft(draft)
      throw e
    }
    endDraft(draft, true)
    this.#committed(generation, 'update')
    return { value: next, generation }
  }

  #replaceArgs(doc, opts) {
    const ifGeneration = opts?.ifGeneration
    if (ifGeneration !== undefined) generationArg(ifGeneration, 'ifGeneration')
    this.#checkRule(doc, 'commit')
    const [json, big, large] = quietly(() => encode(doc, this.#pretty, false, this.#path, 'replace'))
    // A document a load() or get() served keeps its numbers' texts (see `follow`).
    return [json, untouched(doc, null, big, this.#since, [this.#reads], this.#path, 'replace', () => this.#fileValue()), large, ifGeneration ?? -1]
  }

  /** Replaces the whole document; with `{ ifGeneration }` only if the file is still at it. */
  async replace(doc, opts) {
    this.#refuseNested('a replace')
    const [json, big, large, ifGeneration] = this.#replaceArgs(doc, opts)
    const generation = Number(await this.#async(() => this.#native.replace(json, big, large, ifGeneration)))
    this.#committed(generation, 'replace')
    return generation
  }

  replaceSync(doc, opts) {
    this.#refuseBlocking('a replaceSync')
    const [json, big, large, ifGeneration] = this.#replaceArgs(doc, opts)
    const generation = Number(this.#sync(() => this.#native.replaceSync(json, big, large, ifGeneration)))
    this.#committed(generation, 'replace')
    return generation
  }

  /** Holds the writers' lock while `fn` runs (for example while another program edits the file). */
  async withLock(fn) {
    if (typeof fn !== 'function') throw new TypeError('statesafe: withLock() takes a function')
    this.#refuseNested('a withLock')
    const tx = await this.#async(() => this.#native.begin('lock', 0))
    const entry = this.#entry()
    try {
      return await this.#holding(entry, fn)
    } finally {
      letGo(entry)
      await this.#async(() => tx.release())
    }
  }

  withLockSync(fn) {
    if (typeof fn !== 'function') throw new TypeError('statesafe: withLockSync() takes a function')
    this.#refuseBlocking('a withLockSync')
    const tx = this.#sync(() => this.#native.beginSync('lock', 0))
    const entry = this.#entry()
    try {
      let r
      try {
        r = this.#holding(entry, fn)
      } finally {
        letGo(entry)
      }
      if (isThenable(r)) {
        throw new TypeError('statesafe: the function given to withLockSync() returned a promise; use withLock()')
      }
      return r
    } finally {
      this.#sync(() => tx.releaseSync())
    }
  }

  /** What is wrong with the file and its backups, if anything; changes nothing. */
  async check() {
    return JSON.parse(await this.#async(() => this.#native.check()))
  }

  checkSync() {
    return JSON.parse(this.#sync(() => this.#native.checkSync()))
  }

  /** Recovers a damaged file now (quarantine, restore the newest valid backup); null if sound. */
  async recover() {
    this.#refuseNested('a recover')
    const event = JSON.parse(await this.#async(() => this.#native.recover()))
    if (event) this.#committed(event.generation, 'recover')
    return event
  }

  recoverSync() {
    this.#refuseBlocking('a recoverSync')
    const event = JSON.parse(this.#sync(() => this.#native.recoverSync()))
    if (event) this.#committed(event.generation, 'recover')
    return event
  }

  /** The backups kept, newest first, and foreign files found among them. */
  async backups() {
    return JSON.parse(await this.#async(() => this.#native.backups()))
  }

  backupsSync() {
    return JSON.parse(this.#sync(() => this.#native.backupsSync()))
  }

  /** Commits a past generation (from a backup or the history) as a new generation. */
  async restore(generation) {
    generationArg(generation, 'restore\'s generation')
    this.#refuseNested('a restore')
    const g = Number(await this.#async(() => this.#native.restore(generation)))
    this.#committed(g, 'restore')
    return g
  }

  restoreSync(generation) {
    generationArg(generation, 'restoreSync\'s generation')
    this.#refuseBlocking('a restoreSync')
    const g = Number(this.#sync(() => this.#native.restoreSync(generation)))
    this.#committed(g, 'restore')
    return g
  }

  /** The audit history, oldest first. */
  // (Served as snapshots: the integers no double holds, in snapshots and patches, are
  // BigInts, as in documentAt.)
  async history() {
    return decode(await this.#async(() => this.#native.history()), this.#path, this.#reads)[0].value
  }

  historySync() {
    return decode(this.#sync(() => this.#native.historySync()), this.#path, this.#reads)[0].value
  }

  /** The RFC 6902 JSON Patch from generation `from` to generation `to`. */
  async diff(from, to) {
    generationArg(from, 'diff\'s from')
    generationArg(to, 'diff\'s to')
    return decode(await this.#async(() => this.#native.diff(from, to)), this.#path, this.#reads)[0].value
  }

  diffSync(from, to) {
    generationArg(from, 'diffSync\'s from')
    generationArg(to, 'diffSync\'s to')
    return decode(this.#sync(() => this.#native.diffSync(from, to)), this.#path, this.#reads)[0].value
  }

  /** The document as it was at a past generation. */
  async documentAt(generation) {
    generationArg(generation, 'documentAt\'s generation')
    return decode(await this.#async(() => this.#native.documentAt(generation)), this.#path, this.#reads)[0].value
  }

  documentAtSync(generation) {
    generationArg(generation, 'documentAtSync\'s generation')
    return decode(this.#sync(() => this.#native.documentAtSync(generation)), this.#path, this.#reads)[0].value
  }

  /** A summary: generation, size, backups, lock holder, settings. */
  async info() {
    return JSON.parse(await this.#async(() => this.#native.info()))
  }

  infoSync() {
    return JSON.parse(this.#sync(() => this.#native.infoSync()))
  }

  /** Counters and latency summaries since the store was opened. */
  stats() {
    return JSON.parse(this.#sync(() => this.#native.stats()))
  }

  /** Closes the store; later calls fail with ECLOSED. Running operations finish. */
  close() {
    this.#cache = null
    this.#native.close()
  }
}


/** Opens the state file at `path` (nothing is created until the first write). */
function open(path, options) {
  return new Store(path, options)
}

/**
 * `open`, with the opening (for a PostgreSQL URL, the connection) on a thread of the
 * addon: the JavaScript thread never waits for the server.
 */
async function openAsync(path, options = {}) {
  const p = storePath(path)
  let opened
  try {
    opened = await native.NativeStore.openAsync(p, nativeOptions(options, p)[0])
  } catch (e) {
    throw convert(e)
  }
  // The path resolved before the wait: a chdir meanwhile does not change the file.
  return new Store(p, options, { key: OPENED, native: opened })
}

/**
 * The path a store is opened on: a file: URL as its path, a relative path resolved
 * against the working directory at the opening (a later `process.chdir()` does not
 * move the store, and `store.path` still names its file), a PostgreSQL URL as it is.
 * A NUL byte, which no file name can hold, is EBADPATH (as the library's other paths
 * that cannot hold a state file), before anything is opened.
 */
function storePath(path) {
  if (typeof path !== 'string' && !(path instanceof URL)) {
    throw coded(new TypeError('statesafe: the path must be a string or a file: URL'), 'EBADARG')
  }
  const p = path instanceof URL ? require('node:url').fileURLToPath(path) : path
  if (p.includes('\0')) {
    const reason = 'the path argument holds a NUL byte (\\0), which no file name can hold'
    throw badPath(p, reason, 'pass the path without the NUL byte (a string cut from binary data, or a C string\'s terminator, may carry one)')
  }
  if (/^postgres(ql)?:\/\//i.test(p)) return p
  // Made absolute by joining, not `path.resolve`: that folds `link/..` as text, where
  // the kernel (and so the CLI and the Python package) goes up from the link's target,
  // and a program in another language would name another file (red22b finding 5).
  if (nodePath.isAbsolute(p)) return p
  const cwd = process.cwd()
  return cwd.endsWith('/') ? `${cwd}${p}` : `${cwd}/${p}`
}

function badPath(path, reason, hint) {
  return new StatesafeError({
    code: 'EBADPATH',
    kind: 'bad_path',
    message: `\`${path.replaceAll('\0', '\\0')}\` cannot be used as a state file: ${reason}`,
    hint,
    path,
    reason,
  })
}

module.exports = { open, openAsync, Store, StatesafeError }
