import { randomBytes } from 'node:crypto'
import os from 'node:os'
import { Piscina } from 'piscina'
import type { Sql } from '../db/client.ts'
import { settleWithin } from '../settle-within.ts'
import type { Outcome } from './execute.ts'
import { claimTask, releaseTasks, renewLeases, retryLater, settleAbandonedTasks } from './queries.ts'

export type DispatcherOptions = {
  sql: Sql
  databaseUrl: string
  storageDir: string
  schema: string
  concurrency: number
  leaseSeconds: number
  /** A safety net only: NOTIFY wakes the dispatcher at once. The poll finds retries whose backoff has passed. */
  pollSeconds: number
  fileRetentionHours: number
  /** statement_timeout of a task's data queries; 0: none. */
  statementTimeoutMs: number
  log?: (message: string) => void
}

const WORKER_FILE = new URL('../../workers/run-task.ts', import.meta.url).href
const MAX_CONTIGUOUS_ERRORS = 30
const STOP_QUERY_MS = 3_000 // on stop, how long to wait for a database that does not answer

/**
 * Claims tasks and runs them in a piscina pool, as many at once as the pool has
 * threads. Several dispatchers (in one process or many) share one database: the
 * claim skips rows others hold, so no task runs twice at the same time.
 */
export function startDispatcher(options: DispatcherOptions) {
  const { sql, concurrency, leaseSeconds } = options
  const log = options.log ?? ((message: string) => console.log(`[dispatcher] ${message}`))
  const workerId = `${os.hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`
  // One warm thread: a new one compiles the TypeScript task code first (about a second).
  const pool = new Piscina({ filename: WORKER_FILE, minThreads: 1, maxThreads: concurrency, idleTimeout: 30_000, concurrentTasksPerWorker: 1 })
  const running = new Map<string, { runId: string; done: Promise<void> }>()
  let stopping = false
  let claiming: Promise<void> | null = null
  let contiguousErrors = 0

  const listening = sql.listen('sluice_tasks', () => void wake(), () => void wake()).catch((err) => log(`LISTEN failed, polling only: ${err.message}`))
  const pollTimer = setInterval(() => void wake(), options.pollSeconds * 1000)
  const heartbeatTimer = setInterval(() => void heartbeat(), (leaseSeconds * 1000) / 3)
  void wake()

  return { workerId, stop, runningCount: () => running.size, wake }

  function wake(): Promise<void> {
    claiming ??= claimWhileFree().finally(() => { claiming = null })
    return claiming
  }

  async function claimWhileFree() {
    try {
      await settleAbandonedTasks(sql)
      while (!stopping && running.size < concurrency) {
        const task = await claimTask(sql, workerId, leaseSeconds)
        if (!task) break
        log(`claimed ${task.kind} ${task.id} (attempt ${task.attempts})`)
        start(task.id, task.runId!)
      }
      contiguousErrors = 0
    } catch (err) {
      // The database may be restarting; keep serving and try again on the next tick.
      if (++contiguousErrors % MAX_CONTIGUOUS_ERRORS === 1) log(`cannot claim tasks: ${(err as Error).message}`)
    }
  }

  function start(taskId: string, runId: string) {
    const input = { taskId, runId, databaseUrl: options.databaseUrl, storageDir: options.storageDir, schema: options.schema, fileRetentionHours: options.fileRetentionHours, statementTimeoutMs: options.statementTimeoutMs }
    const done = (pool.run(input) as Promise<Outcome>)
      .then((outcome) => log(`${outcome.state} ${taskId}${outcome.error ? `: ${outcome.error}` : ''}`))
      .catch(async (err: Error) => {
        // The worker thread itself died (out of memory, a native crash): count it as a transient failure.
        log(`worker for ${taskId} crashed: ${err.message}`)
        await retryLater(sql, taskId, runId, { code: 'WORKER_CRASHED', message: `The worker running this task crashed: ${err.message}` }).catch(() => {})
      })
      .finally(() => {
        running.delete(taskId)
        if (!stopping) void wake()
      })
    running.set(taskId, { runId, done })
  }

  async function heartbeat() {
    try {
      await renewLeases(sql, workerId, [...running.values()].map((r) => r.runId), leaseSeconds)
    } catch (err) {
      log(`could not renew leases: ${(err as Error).message}`)
    }
  }

  /**
   * Stops claiming, lets running tasks finish for up to `graceMs`, then hands the
   * rest back to the queue for another gateway (or the next start). A database that
   * does not answer cannot hold the shutdown: a claim in flight counts against the
   * grace period, and each query on the way out waits `STOP_QUERY_MS` at most (the
   * leases then lapse and the tasks are taken up again anyway).
   */
  async function stop(graceMs = 10_000) {
    stopping = true
    clearInterval(pollTimer)
    const deadline = Date.now() + graceMs
    await settleWithin(claiming, graceMs)
    const unfinished = [...running.values()]
    const timedOut = await Promise.race([
      Promise.all(unfinished.map((r) => r.done)).then(() => false),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(true), Math.max(0, deadline - Date.now())).unref()),
    ])
    clearInterval(heartbeatTimer)
    if (timedOut) {
      const runIds = [...running.values()].map((r) => r.runId)
      log(`handing ${runIds.length} unfinished task(s) back to the queue`)
      const released = releaseTasks(sql, runIds).catch((err) => log(`could not release tasks: ${err.message}`))
      if (!(await settleWithin(released, STOP_QUERY_MS))) log('the database did not answer: the tasks will be taken up again once their leases lapse')
    }
    await pool.destroy()
    const listener = await listening
    if (listener) await settleWithin(listener.unlisten(), STOP_QUERY_MS)
  }
}

export type Dispatcher = ReturnType<typeof startDispatcher>
