// SIGKILL a Node process in the middle of updates to a ~1 MiB document, 200 times:
// the file always loads, holds an acknowledged version (or the one in flight), and
// the next commit leaves no temporary file behind.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { fork } from 'node:child_process'
import { open } from '../index.mjs'
import { tempDir, here, leftoverTemps } from './helpers.mjs'

const child = join(here, 'fixtures', 'child.cjs')
const KILLS = Number(process.env.STATESAFE_KILLS ?? 200)
const LANES = 4 // files killed in parallel, KILLS / LANES each
const MiB = 1 << 20

// Starts a writer, lets it acknowledge two updates (timing them), then kills it at
// `phase` (0 to 1) of one update's duration later: kill points spread over the whole
// update whatever the speed of the build and the machine.
async function killOnce(file, phase) {
  const proc = fork(child, ['churn', file], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  let acked = 0
  const times = []
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve(signal)))
  await new Promise((resolve, reject) => {
    proc.on('message', (m) => {
      if (!m.acked) return
      acked = m.acked
      times.push(performance.now())
      if (times.length === 2) resolve()
    })
    proc.on('exit', () => reject(new Error('the child exited before it was killed')))
  })
  await new Promise((resolve) => setTimeout(resolve, (times[1] - times[0]) * phase))
  proc.kill('SIGKILL')
  assert.equal(await exited, 'SIGKILL')
  return acked
}

test(`SIGKILL mid-update ${KILLS} times on a ~1 MiB document`, async (t) => {
  const dir = tempDir(t)
  const lanes = Array.from({ length: LANES }, async (_, lane) => {
    const file = join(dir, `state-${lane}.json`)
    const store = open(file)
    const recovered = []
    store.on('recovered', (e) => recovered.push(e))
    await store.replace({ seq: 0, pad: 'abcdefghijklmnopqrstuvwxyz'.repeat(MiB / 26) })
    let killsWithCommitsInFlight = 0
    let killsMidWrite = 0
    for (let i = 0; i < KILLS / LANES; i++) {
      const before = (await store.get()).seq
      const acked = await killOnce(file, ((i + lane / LANES) * 0.618) % 1)
      if (leftoverTemps(file).length > 0) killsMidWrite++
      const { value } = await store.load() // must load: never damaged, never empty
      const floor = Math.max(before, acked)
      assert.ok(
        value.seq === floor || value.seq === floor + 1,
        `lane ${lane} kill ${i}: seq ${value.seq}, acknowledged ${acked}, before ${before}`,
      )
      assert.equal(value.pad.length, 26 * Math.floor(MiB / 26))
      if (value.seq > acked && value.seq > before) killsWithCommitsInFlight++
      // The next commit sweeps what the killed writer left.
      await store.update((s) => void (s.checks = (s.checks ?? 0) + 1))
      assert.deepEqual(leftoverTemps(file), [], `lane ${lane} kill ${i}: temporary file left behind`)
    }
    assert.deepEqual(recovered, [], 'no kill ever damaged the file')
    return [killsWithCommitsInFlight, killsMidWrite]
  })
  const counts = await Promise.all(lanes)
  const inFlight = counts.reduce((a, [n]) => a + n, 0)
  const midWrite = counts.reduce((a, [, n]) => a + n, 0)
  console.error(
    `# ${KILLS} kills: ${midWrite} left a temporary file (killed mid-write), ${inFlight} after a commit was durable but before it was acknowledged`,
  )
  // A kill test whose kills never land mid-write proves nothing about cleanup.
  assert.ok(midWrite > 0, 'no kill landed while a temporary file existed')
})
