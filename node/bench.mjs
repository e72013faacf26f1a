// `await store.update` side by side with what npm users write today, in one run:
//
//   statesafe          await store.update(fn): lock, read, fn, validate, write, fsync,
//                      rename, fsync the directory, backup link, history, unlock
//   wfa + dir fsync    JSON.stringify + write-file-atomic with fsync: true, then an fsync
//                      of the directory (the durability statesafe gives; write-file-atomic
//                      alone skips it, and locks nothing across processes)
//   fs.writeFile       JSON.stringify + fs.promises.writeFile (not atomic, not durable)
//   read + wfa + dir fsync   the same read-modify-write as statesafe's update, without
//                      a lock: fs.readFile + JSON.parse + change + the wfa row
//
// Usage: node bench.mjs [--dir DIR] [--rounds N] [--json]. Rounds interleave the three
// contenders so that drift on a shared machine hits all of them alike; the table shows
// the median and p90 of every call, and each median over write-file-atomic's.
import { mkdtempSync, rmSync, openSync, fsyncSync, closeSync } from 'node:fs'
import { writeFile, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { tmpdir } from 'node:os'
import { parseArgs } from 'node:util'
import writeFileAtomic from 'write-file-atomic'
import { open } from './index.mjs'

const { values: args } = parseArgs({
  options: {
    dir: { type: 'string', default: process.env.STATESAFE_BENCH_DIR ?? tmpdir() },
    rounds: { type: 'string', default: '10' },
    json: { type: 'boolean', default: false },
  },
})

function documentOf(bytes) {
  const items = []
  const doc = { version: 1, n: 0, items }
  let i = 0
  while (JSON.stringify(doc, null, 2).length < bytes) {
    items.push({ id: `res-${i}`, kind: 'agent', name: `resource number ${i}`, hash: (i * 2654435761 % 2 ** 32).toString(16), updatedAt: '2026-01-01T00:00:00.000Z', enabled: i % 2 === 0 })
    i++
  }
  return doc
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
}

async function bench(bytes, perRound) {
  const dir = mkdtempSync(join(args.dir, 'statesafe-bench-'))
  try {
    const doc = documentOf(bytes)
    const store = open(join(dir, 'statesafe.json'))
    await store.replace(doc)
    const wfaFile = join(dir, 'wfa.json')
    const rmwFile = join(dir, 'rmw.json')
    await writeFile(rmwFile, JSON.stringify(doc, null, 2))
    const syncDir = () => {
      const fd = openSync(dir, 'r')
      try {
        fsyncSync(fd)
      } finally {
        closeSync(fd)
      }
    }
    const plainFile = join(dir, 'plain.json')
    let wfaState = structuredClone(doc)
    let plainState = structuredClone(doc)
    const contenders = {
      statesafe: () => store.update((s) => void (s.n += 1)),
      'wfa + dir fsync': async () => {
        wfaState.n += 1
        await writeFileAtomic(wfaFile, JSON.stringify(wfaState, null, 2), { fsync: true })
        syncDir()
      },
      'read + wfa + dir fsync': async () => {
        const state = JSON.parse(await readFile(rmwFile, 'utf8'))
        state.n += 1
        await writeFileAtomic(rmwFile, JSON.stringify(state, null, 2), { fsync: true })
        syncDir()
      },
      'fs.writeFile': async () => {
        plainState.n += 1
        await writeFile(plainFile, JSON.stringify(plainState, null, 2))
      },
    }
    const samples = Object.fromEntries(Object.keys(contenders).map((k) => [k, []]))
    for (const f of Object.values(contenders)) for (let i = 0; i < 5; i++) await f() // warm up
    for (let r = 0; r < Number(args.rounds); r++) {
      for (const [name, f] of Object.entries(contenders)) {
        for (let i = 0; i < perRound; i++) {
          const t0 = process.hrtime.bigint()
          await f()
          samples[name].push(Number(process.hrtime.bigint() - t0) / 1e6)
        }
      }
    }
    const rows = {}
    for (const [name, xs] of Object.entries(samples)) {
      xs.sort((a, b) => a - b)
      rows[name] = { median: quantile(xs, 0.5), p90: quantile(xs, 0.9), n: xs.length }
    }
    const base = rows['wfa + dir fsync'].median
    for (const row of Object.values(rows)) row.ratio = row.median / base
    store.close()
    return { bytes: JSON.stringify(doc, null, 2).length, rows }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const results = [await bench(1 << 10, 30), await bench(1 << 20, 3)]
if (args.json) {
  console.log(JSON.stringify(results, null, 2))
} else {
  console.log(`Node ${process.version}, ${args.rounds} interleaved rounds, files in ${args.dir}\n`)
  console.log('| document | contender | median | p90 | median / wfa + dir fsync |')
  console.log('|---|---|---|---|---|')
  for (const { bytes, rows } of results) {
    const size = bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(2)} MiB` : `${(bytes / 1024).toFixed(2)} KiB`
    for (const [name, r] of Object.entries(rows)) {
      console.log(`| ${size} | ${name} | ${r.median.toFixed(2)} ms | ${r.p90.toFixed(2)} ms | ${r.ratio.toFixed(2)}x |`)
    }
  }
}
