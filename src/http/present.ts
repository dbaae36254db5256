import type { LinkSigner } from '../auth/index.ts'
import type { TaskRow } from '../tasks/queries.ts'

/** How long the signed link in a task's JSON stays valid, at most (never past the file's own expiry). */
const SIGNED_LINK_HOURS = 24

/** The public JSON shape of a task: the contract scripts and later work rely on. */
export function presentTask(task: TaskRow, origin: string, signer: LinkSigner) {
  const fileExpired = hasExpiredFile(task)
  const hasFile = task.resultKey !== null && !fileExpired
  const isSucceeded = task.kind === 'export' && task.state === 'succeeded' && hasFile
  const hasReport = task.kind === 'import' && hasFile
  const link = (isSucceeded || hasReport) ? signedLink(task, signer) : null
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
    /** The same file without a session or token, until `expiresAt`: for sharing, or a script that holds no token. */
    signedDownload: link ? { url: `${origin}${link.path}`, expiresAt: link.expiresAt } : null,
    /** The retention period passed and the file was deleted; the task's other facts stay. */
    fileExpired,
    error: task.state === 'failed' ? (task.error ?? 'The task failed.') : null,
    errorCode: task.state === 'failed' ? task.errorCode : null,
    /** The SQLSTATE behind `errorCode` (or behind `lastError`) when PostgreSQL raised it; errorCode is always a name. */
    sqlState: task.sqlState,
    /** Why it was cancelled, or is being: by request, or its token was revoked. */
    cancelReason: task.cancelReason,
    /** Kept across retries: why the previous attempt ended, while another is pending. */
    lastError: task.error,
    attempts: task.attempts,
    maxAttempts: task.maxAttempts,
    cancelRequested: task.cancelRequestedAt !== null,
    params: task.params,
    details: task.details,
    createdAt: task.createdAt,
    startedAt: task.startedAt,
    finishedAt: task.finishedAt,
  }
}

export function hasExpiredFile(task: TaskRow): boolean {
  return task.resultExpiredAt !== null || (task.resultKey !== null && task.resultExpiresAt !== null && task.resultExpiresAt < new Date())
}

export function signedLink(task: TaskRow, signer: LinkSigner): { path: string; expiresAt: Date } | null {
  if (!task.resultKey || !task.resultExpiresAt) return null
  // Whole hours, so that polling a task hands out the same link rather than a new one each second.
  const hour = 3600_000
  const expiresAt = new Date(Math.min(Math.ceil(Date.now() / hour) * hour + SIGNED_LINK_HOURS * hour, task.resultExpiresAt.getTime()))
  return { path: signer.sign(task.id, task.resultKey, expiresAt), expiresAt }
}

export const downloadPath = (taskId: string) => `/api/tasks/${taskId}/download`
export const isFinished = (task: TaskRow) => task.state === 'succeeded' || task.state === 'failed' || task.state === 'cancelled'
