// A PostgreSQL state by URL (issue 15): `open('postgres://…?state=NAME')` is the same
// store as a file, on a throwaway server started for this file
// (scripts/pg-test-server). No lost update across processes; a held lock times out
// naming the holder. When no server can be started the tests are skipped loudly,
// and fail under CI=true (CI installs it).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import { open, StatesafeError } from '../index.mjs'
import { here, repoDir } from './helpers.mjs'

let server = null
let base = null
let unavailable = null

before(async () => {
  server = spawn(join(repoDir, 'scripts', 'pg-test-server'), [], { stdio: ['pipe', 'pipe', 'inherit'] })
  const line = await new Promise((resolve) => {
    const rl = createInterface({ input: server.stdout })
    rl.once('line', (l) => { rl.close(); resolve(l) })
    server.once('exit', () => resolve(''))
  })
  if (line.startsWith('url ')) base = line.slice(4)
  else unavailable = line.replace(/^unavailable /, '') || 'scripts/pg-test-server printed nothing'
})

after(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((resolve) => server.once('exit', resolve))
    server.stdin.end() // the script stops the server and removes its directory
    await exited
  }
})

function urlFor(t) {
  if (base === null) {
    if (process.env.CI === 'true') assert.fail(`postgres: ${unavailable} (CI=true: these tests must run)`)
    console.error(`\n*** SKIPPED ${t.name}: postgres: ${unavailable} ***\n`)
    t.skip(`postgres: ${unavailable}`)
    return null
  }
  return `${base}?state=node-${randomUUID().slice(0, 12)}`
}

test('a URL is a store like a file', async (t) => {
  const url = urlFor(t)
  if (url === null) return
  const store = open(url)
  await assert.rejects(store.get(), (e) => e instanceof StatesafeError && e.code === 'ENOENT')
  assert.equal(await store.replace({ n: 1, tags: ['a'] }), 1)
  const { value, generation } = await store.update((s) => { s.n += 1; s.tags.push('b') })
  assert.deepEqual(value, { n: 2, tags: ['a', 'b'] })
  assert.equal(generation, 2)
  assert.equal(store.updateSync((s) => { s.n += 1 }).generation, 3)
  assert.throws(() => store.replaceSync({ n: 0 }, { ifGeneration: 1 }), (e) => e.code === 'ECONFLICT')
  assert.deepEqual((await store.history()).map((e) => e.generation).slice(-3), [1, 2, 3])
  assert.equal((await store.check()).ok, true)
  store.close()
})

test('processes never lose an update', async (t) => {
  const url = urlFor(t)
  if (url === null) return
  const procs = 4
  const times = 50
  const child = join(here, 'fixtures', 'child.cjs')
  const codes = await Promise.all(Array.from({ length: procs }, () => new Promise((resolve) => {
    const p = spawn(process.execPath, [child, 'increment', url, String(times)], { stdio: 'inherit' })
    p.once('exit', resolve)
  })))
  assert.deepEqual(codes, Array(procs).fill(0))
  assert.deepEqual(await open(url).get(), { n: procs * times })
})

test('a held lock times out naming the holder', async (t) => {
  const url = urlFor(t)
  if (url === null) return
  const holder = open(url)
  await holder.replace({ n: 0 })
  const waiter = open(url, { lockTimeoutMs: 300 })
  let release
  const released = new Promise((resolve) => { release = resolve })
  let entered
  const inside = new Promise((resolve) => { entered = resolve })
  const holding = holder.update(async (s) => {
    s.n = 1
    entered()
    await released
  })
  await inside
  await assert.rejects(waiter.update((s) => { s.n = 99 }), (e) => e.code === 'ELOCKTIMEOUT' && e.holder?.pid === process.pid)
  release()
  await holding
  assert.deepEqual(await waiter.get(), { n: 1 })
})
