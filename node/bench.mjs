// `await store.update` side by side with what npm users write today, in one run:
//
//   statesafe          await store.update(fn): lock, read, fn, validate, write, fsync,
//                      rename, fsync the directory, backup link, history, unlock; a
//                      long-lived store, so its update cache is warm
//   statesafe, cache: false   the same without the update cache (parses every time)
//   wfa + dir fsync    JSON.stringify + write-file-atomic with fsync: true, then an fsync
//                      of the directory (the durability statesafe gives; write-file-atomic
//                      alone skips it, and locks nothing across processes)
//   fs.writeFile       JSON.stringify + fs.promises.writeFile (not atomic, not durable)
//   read + wfa + dir fsync   the same read-modify-write as statesafe's update, without
//                      a lock: fs.readFile + JSON.parse + change + the wfa row
//
// Usage: node bench.mjs [--dir DIR] [--rounds N] [--sizes 1k,1m] [--against DIR/index.mjs] [--json]. The contenders are
// interleaved call by call (each round runs every contender once per slot, in an order
// that rotates), so that drift on a shared machine (other processes, fsync latency of
// a busy disk) hits all of them alike. The table shows the median and p90 of every
// call, each median over write-file-atomic's, and the spread of that ratio: the
// samples cut into 10 consecutive blocks, the ratio of medians computed in each, and
// the lowest and highest block shown. The load average before and after is printed:
// on a loaded machine the absolute times inflate, the ratios much less.
import { mkdtempSync, rmSync, openSync, fsyncSync, closeSync } from 'node:fs'
import { writeFile, readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { tmpdir, loadavg, cpus } from 'node:os'
import { parseArgs } from 'node:util'
import writeFileAtomic from 'write-file-atomic'
import { pathToFileURL } from 'node:url'
import { open } from './index.mjs'

const { values: args } = parseArgs({
  options: {
    dir: { type: 'string', default: process.env.STATESAFE_BENCH_DIR ?? tmpdir() },
    rounds: { type: 'string', default: '40' },
    json: { type: 'boolean', default: false },
    // Which documents: `1k`, `1m`, or both (the default), comma-separated.
    sizes: { type: 'string', default: '1k,1m' },
    // Another build of the package (the path of its index.mjs, next to its own
    // statesafe.node) as one more contender: before and after in one process.
    against: { type: 'string' },
  },
})

const other = args.against ? await import(pathToFileURL(resolve(args.against)).href) : null

function documentOf(bytes) {
  const items = []
  const doc = { version: 1, n: 0, items }
  let i = 0
  // Past 256 items, measured every 64: stringifying a 1 MiB document after each item
  // takes minutes.
  while ((i > 256 && i % 64 !== 0) || JSON.stringify(doc, null, 2).length < bytes) {
    items.push({ id: `res-${i}`, kind: 'agent', name: `resource number ${i}`, hash: (i * 2654435761 % 2 ** 32).toString(16), updatedAt: '2026-01-01T00:00:00.000Z', enabled: i % 2 === 0 })
    i++
  }
  return doc
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
}

function median(xs) {
  return quantile([...xs].sort((a, b) => a - b), 0.5)
}

const BLOCKS = 10

async function bench(bytes, perRound) {
  const dir = mkdtempSync(join(args.dir, 'statesafe-bench-'))
  try {
    const doc = documentOf(bytes)
    const store = open(join(dir, 'statesafe.json'))
    await store.replace(doc)
    const uncached = open(join(dir, 'uncached.json'), { cache: false })
    await uncached.replace(doc)
    const against = other?.open(join(dir, 'against.json'))
    await against?.replace(doc)
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
      'statesafe, cache: false': () => uncached.update((s) => void (s.n += 1)),
      ...(against ? { [`statesafe of ${args.against}`]: () => against.update((s) => void (s.n += 1)) } : {}),
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
    const names = Object.keys(contenders)
    const samples = Object.fromEntries(names.map((k) => [k, []]))
    const cpu = Object.fromEntries(names.map((k) => [k, []]))
    for (const f of Object.values(contenders)) for (let i = 0; i < 5; i++) await f() // warm up
    const calls = Number(args.rounds) * perRound
    for (let c = 0; c < calls; c++) {
      for (let k = 0; k < names.length; k++) {
        const name = names[(c + k) % names.length]
        const c0 = process.cpuUsage()
        const t0 = process.hrtime.bigint()
        await contenders[name]()
        samples[name].push(Number(process.hrtime.bigint() - t0) / 1e6)
        const used = process.cpuUsage(c0)
        cpu[name].push((used.user + used.system) / 1e3)
      }
    }
    const base = samples['wfa + dir fsync']
    const blockLen = Math.floor(calls / BLOCKS)
    const rows = {}
    for (const [name, xs] of Object.entries(samples)) {
      const blockRatios = []
      for (let b = 0; b < BLOCKS; b++) {
        const at = b * blockLen
        blockRatios.push(median(xs.slice(at, at + blockLen)) / median(base.slice(at, at + blockLen)))
      }
      blockRatios.sort((a, b) => a - b)
      const sorted = [...xs].sort((a, b) => a - b)
      rows[name] = {
        median: quantile(sorted, 0.5),
        p90: quantile(sorted, 0.9),
        n: xs.length,
        ratio: quantile(sorted, 0.5) / median(base),
        blockMin: blockRatios[0],
        blockMax: blockRatios[BLOCKS - 1],
        // CPU time of the whole process (every thread) during the call: what the
        // call costs the machine, whatever the load.
        cpuMedian: median(cpu[name]),
      }
    }
    const stats = store.stats()
    store.close()
    uncached.close()
    against?.close()
    return { bytes: JSON.stringify(doc, null, 2).length, rows, cache: { hits: stats.cacheHits, misses: stats.cacheMisses } }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const loadBefore = loadavg()
const sizes = new Set(args.sizes.split(','))
const results = []
if (sizes.has('1k')) results.push(await bench(1 << 10, 10))
if (sizes.has('1m')) results.push(await bench(1 << 20, 2))
const loadAfter = loadavg()
if (args.json) {
  console.log(JSON.stringify({ loadBefore, loadAfter, results }, null, 2))
} else {
  const load = (l) => l.map((x) => x.toFixed(2)).join(' ')
  console.log(`Node ${process.version}, ${cpus().length} CPUs, ${args.rounds} rounds interleaved call by call, files in ${args.dir}`)
  console.log(`load average (1, 5, 15 min) before: ${load(loadBefore)}; after: ${load(loadAfter)}\n`)
  console.log(`| document | contender | calls | median | p90 | median / wfa + dir fsync | lowest-highest of ${BLOCKS} blocks | CPU (median) |`)
  console.log('|---|---|---:|---:|---:|---:|---:|---:|')
  for (const { bytes, rows } of results) {
    const size = bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(2)} MiB` : `${(bytes / 1024).toFixed(2)} KiB`
    for (const [name, r] of Object.entries(rows)) {
      console.log(`| ${size} | ${name} | ${r.n} | ${r.median.toFixed(2)} ms | ${r.p90.toFixed(2)} ms | ${r.ratio.toFixed(2)}x | ${r.blockMin.toFixed(2)}-${r.blockMax.toFixed(2)}x | ${r.cpuMedian.toFixed(2)} ms |`)
    }
  }
  for (const { bytes, cache } of results) {
    console.log(`\nupdate cache at ${bytes} bytes: ${cache.hits} hits, ${cache.misses} misses`)
  }
}
