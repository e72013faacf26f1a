// No lost updates across processes, worker threads, and other programs (the CLI,
// Python); and the event loop stays live while an update waits for the lock.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { writeFileSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fork, spawn, spawnSync } from 'node:child_process'
import { Worker } from 'node:worker_threads'
import { open } from '../index.mjs'
import { tempDir, here, cliBin, leftoverTemps } from './helpers.mjs'

const child = join(here, 'fixtures', 'child.cjs')
const N = 500
// Lost updates are a matter of the lock, not of fsync: the 8 x 500 counters commit
// with durability 'none' (still atomic renames, under the same lock) so that 8000
// commits take seconds, not a minute of fsyncs. The mixed-program test and the
// SIGKILL test (kill.test.mjs) run with full durability.
const FAST = 'none'

function exited(proc) {
  return new Promise((resolve, reject) => {
    proc.on('error', reject)
    proc.on('exit', (code, signal) => resolve({ code, signal }))
  })
}

test(`8 processes x ${N} await store.update increments: exact`, async (t) => {
  const file = join(tempDir(t), 'counter.json')
  const procs = Array.from({ length: 8 }, () => fork(child, ['increment', file, String(N), FAST], { stdio: 'inherit' }))
  const results = await Promise.all(procs.map(exited))
  assert.deepEqual(results, Array(8).fill({ code: 0, signal: null }))
  const { value, generation } = await open(file).load()
  assert.equal(value.n, 8 * N)
  assert.equal(generation, 8 * N)
  assert.deepEqual(leftoverTemps(file), [])
})

test(`8 worker threads x ${N} increments in one process: exact`, async (t) => {
  const file = join(tempDir(t), 'counter.json')
  const source = `
    const { workerData, parentPort } = require('node:worker_threads')
    const { open } = require(${JSON.stringify(join(here, '..', 'index.js'))})
    const store = open(workerData.file, { default: { n: 0 }, lockTimeoutMs: 120000, durability: workerData.durability })
    ;(async () => {
      for (let i = 0; i < workerData.n; i++) await store.update((s) => void (s.n += 1))
      parentPort.postMessage('done')
    })()`
  const workers = Array.from({ length: 8 }, () => new Worker(source, { eval: true, workerData: { file, n: N, durability: FAST } }))
  await Promise.all(
    workers.map(
      (w) =>
        new Promise((resolve, reject) => {
          w.on('error', reject)
          w.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`worker exited ${code}`))))
        }),
    ),
  )
  assert.equal((await open(file).get()).n, 8 * N)
})

test('Node, the CLI and Python updating one file at once: exact', async (t) => {
  const file = join(tempDir(t), 'counter.json')
  writeFileSync(file, '{"n": 0}\n')
  const cli = cliBin()
  if (!cli) {
    console.error('\n*** SKIPPED: no statesafe CLI (build it with `cargo build -p statesafe-cli` or set STATESAFE_BIN) ***\n')
    t.skip('no statesafe CLI')
    return
  }
  const python = process.env.STATESAFE_PYTHON ?? 'python3'
  const hasPython = spawnSync(python, ['-c', 'import statesafe'], { stdio: 'ignore' }).status === 0
  if (!hasPython) {
    // CI builds the Python package first (stage 70), so there the part must run.
    assert.notEqual(process.env.CI, 'true', `${python} cannot import statesafe, so the Python part cannot run (set STATESAFE_PYTHON)`)
    console.error(`\n*** Python part SKIPPED: \`${python} -c "import statesafe"\` fails (the Python package is not installed) ***\n`)
  }
  const rounds = 150
  const runners = [
    fork(child, ['increment', file, String(rounds)], { stdio: 'inherit' }),
    fork(child, ['increment', file, String(rounds)], { stdio: 'inherit' }),
    spawn('sh', ['-c', `i=0; while [ $i -lt ${rounds} ]; do "$0" update "$1" '.n += 1' >/dev/null || exit 1; i=$((i+1)); done`, cli, file], {
      stdio: 'inherit',
    }),
  ]
  if (hasPython) {
    const script = `
import statesafe, sys
store = statesafe.open(sys.argv[1], lock_timeout=120)
def inc(d):
    d["n"] += 1
for _ in range(${rounds}):
    store.update(inc)
`
    runners.push(spawn(python, ['-c', script, file], { stdio: 'inherit' }))
  }
  const results = await Promise.all(runners.map(exited))
  for (const r of results) assert.deepEqual(r, { code: 0, signal: null })
  assert.equal((await open(file).get()).n, runners.length * rounds)
})

test('the event loop stays live while updates wait 2 s for a lock held elsewhere', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const store = open(file, { lockTimeoutMs: 30_000 })
  await store.replace({ n: 0 })
  const other = join(tempDir(t), 'other.txt')
  writeFileSync(other, 'x'.repeat(4096))

  const holder = fork(child, ['hold-lock', file, '2000'], { stdio: 'inherit' })
  await new Promise((resolve) => holder.once('message', resolve))
  const released = exited(holder)

  // More waiting updates than libuv has pool threads (4): none of them may sit on one.
  const started = Date.now()
  const waiting = Array.from({ length: 8 }, () => store.update((s) => void (s.n += 1)))
  let ticks = 0
  let last = Date.now()
  let maxGap = 0
  const timer = setInterval(() => {
    const now = Date.now()
    maxGap = Math.max(maxGap, now - last)
    last = now
    ticks++
  }, 10)
  let reads = 0
  let readsWhileWaiting = 0
  let done = false
  const readers = Array.from({ length: 8 }, async () => {
    while (!done) {
      await readFile(other)
      reads++
    }
  })
  const results = await Promise.all(waiting)
  const firstDone = Date.now()
  readsWhileWaiting = reads
  done = true
  clearInterval(timer)
  await Promise.all(readers)
  await released

  assert.ok(firstDone - started >= 1000, 'the updates really waited for the other process')
  assert.deepEqual(results.map((r) => r.generation).sort((a, b) => a - b), [2, 3, 4, 5, 6, 7, 8, 9])
  // Generous bounds for a shared, noisy machine: 2 s of waiting allows ~200 ticks.
  assert.ok(ticks >= 50, `setInterval(10 ms) fired only ${ticks} times in ${firstDone - started} ms`)
  assert.ok(maxGap < 500, `the event loop stalled for ${maxGap} ms`)
  assert.ok(readsWhileWaiting >= 100, `only ${readsWhileWaiting} fs.readFile calls completed while the updates waited`)
})

test('the addon reuses its threads: one for calls in turn, one per call waiting at once', async (t) => {
  if (process.platform !== 'linux') {
    console.error('\n*** SKIPPED thread reuse: needs /proc/self/task (Linux) ***\n')
    t.skip('needs /proc/self/task (Linux)')
    return
  }
  const addonThreads = () =>
    readdirSync('/proc/self/task').filter((tid) => {
      try {
        return readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() === 'statesafe'
      } catch {
        return false // ended meanwhile
      }
    })
  const file = join(tempDir(t), 'state.json')
  const store = open(file, { lockTimeoutMs: 30_000, durability: FAST })
  await store.replace({ n: 0 })
  const before = addonThreads().length
  const seen = new Set()
  for (let i = 0; i < 30; i++) {
    await store.update((s) => void (s.n += 1))
    await store.get()
    // The thread that served the call waits for the next one (for 10 s).
    const now = addonThreads()
    assert.ok(now.length >= 1, `no addon thread left waiting after call ${i}`)
    for (const tid of now) seen.add(tid)
  }
  assert.ok(seen.size <= before + 2, `${seen.size} addon threads served 60 calls in turn (${before} before)`)

  // Calls that wait for a lock held elsewhere never wait for each other's thread.
  const holder = fork(child, ['hold-lock', file, '1500'], { stdio: 'inherit' })
  await new Promise((resolve) => holder.once('message', resolve))
  const released = exited(holder)
  const waiting = Array.from({ length: 12 }, () => store.update((s) => void (s.n += 1)))
  await new Promise((resolve) => setTimeout(resolve, 500))
  assert.ok(addonThreads().length >= 12, `only ${addonThreads().length} addon threads for 12 updates waiting at once`)
  await Promise.all(waiting)
  await released
  assert.equal((await store.get()).n, 42)
})

test('a child process started while the lock is held inherits none of the store’s descriptors', async (t) => {
  // Node never forks its own runtime (child_process.fork starts a new Node), but every
  // child does inherit descriptors not marked close-on-exec: an inherited lock
  // descriptor would keep the lock held for as long as the child lives, even after
  // this process died. The addon opens everything with O_CLOEXEC.
  if (process.platform !== 'linux') {
    console.error('\n*** SKIPPED descriptor inheritance: needs /proc/self/fd (Linux) ***\n')
    t.skip('needs /proc/self/fd (Linux)')
    return
  }
  const dir = tempDir(t)
  const file = join(dir, 'state.json')
  const store = open(file)
  await store.replace({ n: 0 })
  const inherited = await store.withLock(async () => {
    const out = spawnSync('sh', ['-c', 'for f in /proc/self/fd/*; do readlink "$f"; done; true'], { encoding: 'utf8' })
    assert.equal(out.status, 0, out.stderr)
    return out.stdout.split('\n').filter((target) => target.startsWith(dir))
  })
  assert.deepEqual(inherited, [])
  // And while an update holds the lock with the document read.
  const duringUpdate = []
  await store.update((s) => {
    const out = spawnSync('sh', ['-c', 'for f in /proc/self/fd/*; do readlink "$f"; done; true'], { encoding: 'utf8' })
    duringUpdate.push(...out.stdout.split('\n').filter((target) => target.startsWith(dir)))
    s.n += 1
  })
  assert.deepEqual(duringUpdate, [])
})
