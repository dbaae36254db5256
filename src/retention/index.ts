import type { Sql } from '../db/client.ts'
import { settleWithin } from '../settle-within.ts'
import type { Storage } from '../storage/index.ts'
import { sweepStorage, type SweepCounts, type SweepSettings } from './sweep.ts'

export { sweepStorage, type SweepCounts, type SweepSettings } from './sweep.ts'

export type RetentionOptions = {
  sql: Sql
  storage: Storage
  settings: SweepSettings
  intervalMs: number
  log: (message: string) => void
}

/**
 * Sweeps storage shortly after start and then every `intervalMs`. A sweep that
 * fails (the database is away) is logged and tried again on the next tick.
 */
export function startRetentionSweeper({ sql, storage, settings, intervalMs, log }: RetentionOptions) {
  let sweeping: Promise<SweepCounts | null> | null = null
  // A tick while a sweep is still going is skipped; sweep() itself always starts a fresh one.
  const tick = () => { if (!sweeping) void sweep() }
  const first = setTimeout(tick, Math.min(intervalMs, 5_000))
  const timer = setInterval(tick, intervalMs)
  first.unref()
  timer.unref()
  return { sweep, stop }

  /** Runs a sweep that starts after any one in progress, so it sees every change made before the call. */
  function sweep(): Promise<SweepCounts | null> {
    const run: Promise<SweepCounts | null> = (sweeping ?? Promise.resolve(null))
      .then(() => sweepStorage(sql, storage, settings))
      .then((counts) => {
        const total = counts.expiredResults + counts.expiredUploads + counts.orphanFiles + counts.staleTempFiles
        if (total > 0) {
          log(`retention: deleted ${counts.expiredResults} expired result file(s), ${counts.expiredUploads} upload(s), ${counts.orphanFiles} orphan file(s), ${counts.staleTempFiles} stale temp file(s)`)
        }
        return counts
      })
      .catch((err: Error) => {
        log(`retention sweep failed, will try again: ${err.message}`)
        return null
      })
      .finally(() => { if (sweeping === run) sweeping = null })
    sweeping = run
    return run
  }

  /** Waits up to `waitMs` for a sweep in progress: one stuck on an unanswering database must not hold a shutdown. */
  async function stop(waitMs = 3_000) {
    clearTimeout(first)
    clearInterval(timer)
    await settleWithin(sweeping, waitMs)
  }
}

export type RetentionSweeper = ReturnType<typeof startRetentionSweeper>
