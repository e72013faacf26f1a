// Shared by the tests: one place that makes test directories (STATESAFE_TEST_DIR points
// every test at another filesystem: a tmpfs, a loop mount, a FUSE mount), and one that
// finds the CLI.
import { mkdtempSync, rmSync, existsSync, readdirSync, readFileSync } from 'node:fs'
import assert from 'node:assert/strict'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execFileSync } from 'node:child_process'

export const here = dirname(fileURLToPath(import.meta.url))
export const packageDir = dirname(here)
export const repoDir = dirname(packageDir)

/** A fresh directory for one test, removed when the test ends. */
export function tempDir(t, prefix = 'statesafe-node-') {
  const dir = mkdtempSync(join(process.env.STATESAFE_TEST_DIR ?? tmpdir(), prefix))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** The `statesafe` CLI: $STATESAFE_BIN, else the workspace's release or debug build. */
export function cliBin() {
  const candidates = [
    process.env.STATESAFE_BIN,
    join(repoDir, 'target', 'release', 'statesafe'),
    join(repoDir, 'target', 'debug', 'statesafe'),
  ]
  return candidates.find((p) => p && existsSync(p)) ?? null
}

/** Temporary files a commit left behind beside `file`. */
export function leftoverTemps(file) {
  const base = file.split('/').pop()
  return readdirSync(dirname(file)).filter((n) => n.startsWith(`.${base}.statesafe-tmp-`))
}

/** Whether we can mount filesystems (root in a namespace that allows it). */
export function canMount(dir) {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'ignore' })
    execFileSync('umount', [dir], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** A fresh tmpfs mounted with `options` for one test; unmounted and removed after it. */
export function mountDir(t, options) {
  const dir = mkdtempSync(join(process.env.STATESAFE_TEST_DIR ?? tmpdir(), 'statesafe-node-mnt-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir])
  t.after(() => {
    execFileSync('umount', ['-l', dir])
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}

/**
 * Commits `doc` through `store.update` and checks the file is byte for byte
 * `JSON.stringify` of it in the store's `layout` plus a newline, and that the next
 * update starts from that same document.
 */
export async function updateWritesExactly(store, doc, layout) {
  // An update's function returns a document of its state's kind (or any, from null):
  // the kind is changed by a replace.
  const kind = (v) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v)
  const state = await store.get()
  if (state !== null && kind(state) !== kind(doc)) await store.replace(null)
  await store.update(() => doc)
  const expected = `${JSON.stringify(doc, null, layout === 'pretty' ? 2 : undefined)}\n`
  assert.equal(readFileSync(store.path, 'utf8'), expected, layout)
  let seen
  await store.update((s) => void (seen = s))
  assert.deepStrictEqual(seen, JSON.parse(expected), layout)
}

// The exact decimal value of a JSON number's text, as [digits BigInt, power of ten],
// normalised (no trailing zeros in the digits; zero as [0n, 0]; an exponent `-0` as 0,
// not -0), so `12345678901234567890e0`, `1234567890.123456789e10` and
// `12345678901234567890` compare equal.
export function exact(text) {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text)
  assert.ok(m, `not a JSON number: ${text}`)
  let digits = BigInt(`${m[1]}${m[2]}${m[3] ?? ''}`)
  let exp = Number(m[4] ?? 0) - (m[3] ?? '').length + 0
  while (digits !== 0n && digits % 10n === 0n) {
    digits /= 10n
    exp += 1
  }
  return [digits, digits === 0n ? 0 : exp]
}

// The text of the number at top-level key `key` in a flat JSON object's text.
export function numberText(fileText, key) {
  const m = new RegExp(`"${key}":\\s*(-?[0-9][0-9.eE+-]*)`).exec(fileText)
  assert.ok(m, `no number at "${key}" in ${fileText}`)
  return m[1]
}
