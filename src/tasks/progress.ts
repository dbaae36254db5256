import type { Sql } from '../db/client.ts'
import { reportProgress, type Progress } from './queries.ts'

export type StopReason = 'cancel' | 'lost'

/** Thrown into a running task's pipeline when it must stop. */
export class TaskStopped extends Error {
  constructor(readonly reason: StopReason) {
    super(reason === 'cancel' ? 'cancelled by request' : 'this attempt lost its lease to another gateway')
    this.name = 'TaskStopped'
  }
}

const INTERVAL_MS = 500

/**
 * Worker-side progress: the task updates numbers in memory as fast as it likes;
 * they reach the row at most twice a second. The same write tells whether the task
 * was cancelled or taken over, and `signal` aborts then, within about a second.
 */
export function trackProgress(sql: Sql, taskId: string, runId: string, total: number | null) {
  const progress: Progress = { rows: 0, bytes: 0, total, percent: 0 }
  const controller = new AbortController()
  let writing: Promise<void> | null = null
  let failures = 0
  const timer = setInterval(() => void flush(), INTERVAL_MS)

  return { progress, signal: controller.signal, flush, stop }

  function flush(): Promise<void> {
    writing ??= reportProgress(sql, taskId, runId, progress)
      .then((verdict) => {
        failures = 0
        if (verdict !== 'go' && !controller.signal.aborted) controller.abort(new TaskStopped(verdict))
      })
      .catch((err) => {
        // A few missed writes are harmless; a database gone for good ends the attempt
        // (its lease then lapses and another gateway takes the task up again).
        if (++failures >= 20 && !controller.signal.aborted) controller.abort(err)
      })
      .finally(() => {
        writing = null
      })
    return writing
  }

  async function stop() {
    clearInterval(timer)
    await writing
  }
}

export type ProgressTracker = ReturnType<typeof trackProgress>
