import type { TaskRow } from '../tasks/queries.ts'

/** The public JSON shape of a task: the contract scripts and later work rely on. */
export function presentTask(task: TaskRow, origin: string) {
  const isSucceeded = task.kind === 'export' && task.state === 'succeeded' && task.resultKey !== null
  const hasReport = task.kind === 'import' && task.resultKey !== null
  return {
    id: task.id,
    kind: task.kind,
    dataset: task.dataset,
    state: task.state,
    progress: {
      rows: task.progressRows,
      bytes: task.progressBytes,
      total: task.progressTotal,
      percent: task.state === 'succeeded' ? 100 : Math.round(task.progressPercent * 10) / 10,
    },
    download: isSucceeded ? `${origin}${downloadPath(task.id)}` : null,
    file: isSucceeded ? { name: task.resultName, size: task.resultSize, sha256: task.resultSha256, expiresAt: task.resultExpiresAt } : null,
    /** An import's error report: the failing rows with `line` and `error` columns. */
    report: hasReport ? `${origin}${downloadPath(task.id)}` : null,
    error: task.state === 'failed' ? (task.error ?? 'The task failed.') : null,
    errorCode: task.state === 'failed' ? task.errorCode : null,
    /** Kept across retries: why the previous attempt ended, while another is pending. */
    lastError: task.error,
    attempts: task.attempts,
    cancelRequested: task.cancelRequestedAt !== null,
    params: task.params,
    details: task.details,
    createdAt: task.createdAt,
    startedAt: task.startedAt,
    finishedAt: task.finishedAt,
  }
}

export const downloadPath = (taskId: string) => `/api/tasks/${taskId}/download`
export const isFinished = (task: TaskRow) => task.state === 'succeeded' || task.state === 'failed' || task.state === 'cancelled'
