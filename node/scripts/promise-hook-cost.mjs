// Usage: node scripts/promise-hook-cost.mjs (docs/benchmarks.md, "tidy13").
// The process-wide cost of a running AsyncLocalStorage on Node 20 (a promise hook for
// every promise the process makes while it is enabled): blocks of 100,000 awaits of a
// trivial async function, alternately with an AsyncLocalStorage enabled (after a
// `run`, as a statesafe update left it before tidy13) and disabled (`disable()`, as
// tidy13 leaves it outside the functions that hold a lock), 20 blocks each, in one
// process; the median of each and their ratio.
import { AsyncLocalStorage } from 'node:async_hooks'
const N = 100000
async function step(i) { return i + 1 }
async function loop() {
  const t = process.hrtime.bigint()
  let x = 0
  for (let i = 0; i < N; i++) x = await step(x)
  return Number(process.hrtime.bigint() - t) / N
}
const als = new AsyncLocalStorage()
const on = [], off = []
await loop()
for (let r = 0; r < 20; r++) {
  als.run([r], () => {})
  on.push(await loop())
  als.disable()
  off.push(await loop())
}
const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]
console.log(`ns per await: AsyncLocalStorage enabled ${med(on).toFixed(1)}, disabled ${med(off).toFixed(1)}: ${(med(on) / med(off)).toFixed(2)}x (${process.version})`)
