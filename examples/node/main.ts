// A run of the seed's CLI: track resources, save, verify, roll back, report.
// Usage: node main.js [STATE_DIR]
import { StatesafeError } from 'statesafe'
import { StateStore, type ResourceRecord } from './state-store'

async function main(dir: string): Promise<void> {
  const state = new StateStore(dir, '1.2.0')
  const now = new Date().toISOString()
  const agents: ResourceRecord[] = ['alpha', 'beta', 'gamma'].map((name) => ({
    id: `agent-${name}`,
    kind: 'agent',
    name,
    hash: name.length.toString(16),
    updatedAt: now,
  }))
  for (const agent of agents) await state.trackResource(agent)
  await state.untrackResource('agent-beta')

  const current = await state.loadState()
  await state.saveState({ ...current, metadata: { ...current.metadata, cliVersion: '1.2.1' } })

  const report = await state.verify()
  const { backups } = await state.backups()
  const oldest = backups[backups.length - 1]
  if (oldest) await state.rollbackTo(oldest.generation)

  try {
    // The validate rule refuses a broken state before anything is written.
    await state.saveState({ ...current, version: 2 as unknown as 1 })
  } catch (e) {
    if (!(e instanceof StatesafeError) || e.code !== 'EINVALID') throw e
  }

  const after = await state.loadState()
  const stats = state.stats()
  console.log(
    JSON.stringify({
      resources: Object.keys(after.resources).sort(),
      cliVersion: after.metadata.cliVersion,
      verified: report.ok,
      backups: backups.length,
      restored: oldest?.generation ?? null,
      commits: stats.commits,
      failures: stats.failures,
    }),
  )
  state.close()
}

main(process.argv[2] ?? '.hypernative').catch((e: unknown) => {
  console.error(e instanceof StatesafeError ? e.describe() : e)
  process.exit(1)
})
