import type { Sql } from '../db/client.ts'
import { isStatementTimeout, isTransient, isUserError, nameSqlState, sqlStateOf } from '../errors.ts'
import { writeExport } from '../exports/index.ts'
import type { Storage } from '../storage/index.ts'
import { runImport } from '../imports/run-import.ts'
import { trackProgress, TaskStopped, type ProgressTracker } from './progress.ts'
import { completeTask, failTask, getTask, markCancelled, retryLater, type TaskRow } from './queries.ts'

/** `sql` records progress and outcomes; `reader` is a read-only session for exports, `writer` the import's own. */
export type TaskDatabase = { sql: Sql; reader: Sql; writer: Sql }
export type RunSettings = { schema: string; fileRetentionHours: number; statementTimeoutMs: number }
export type Outcome = { taskId: string; state: 'succeeded' | 'failed' | 'cancelled' | 'retry' | 'lost'; error?: string }

/**
 * Runs one claimed attempt to its end and records the end in the task row.
 * Whatever happens, the row is left in a state someone can act on: succeeded,
 * failed with a readable error, cancelled, queued for a retry, or (when the
 * database is unreachable) still leased, so another gateway takes it up.
 */
export async function executeTask(db: TaskDatabase, storage: Storage, settings: RunSettings, taskId: string, runId: string): Promise<Outcome> {
  const { sql } = db
  const task = await getTask(sql, taskId)
  if (!task || task.runId !== runId || task.state !== 'running') return { taskId, state: 'lost' }
  const tracker = trackProgress(sql, taskId, runId, task.progressTotal)
  try {
    if (task.kind === 'import') return await finishImport(db, storage, settings, task, tracker)
    // The reader is this task's own session, closed after it: the role holds for the session.
    if (task.runAsRole !== null) await db.reader`select set_config('role', ${task.runAsRole}, false)`
    const file = await writeExport(db.reader, storage, settings.schema, task, tracker)
    await tracker.stop()
    const recorded = await completeTask(sql, taskId, runId, { ...file, retentionHours: settings.fileRetentionHours })
    if (!recorded) {
      await storage.remove(file.key)
      return { taskId, state: 'lost' }
    }
    return { taskId, state: 'succeeded' }
  } catch (err) {
    await tracker.stop()
    return recordFailure(sql, taskId, runId, err, settings)
  }
}

async function finishImport(db: TaskDatabase, storage: Storage, settings: RunSettings, task: TaskRow, tracker: ProgressTracker): Promise<Outcome> {
  const outcome = await runImport({ session: db.writer, storage, schema: settings.schema, task, tracker, retentionHours: settings.fileRetentionHours })
  await tracker.stop()
  const { summary, report } = outcome
  const result = { key: report?.key ?? null, name: report?.name ?? null, size: report?.size ?? null, sha256: report?.sha256 ?? null, retentionHours: settings.fileRetentionHours }
  if (outcome.state === 'failed') {
    await failTask(db.sql, task.id, task.runId!, { code: 'ROWS_INVALID', message: outcome.message }, summary, result)
    return { taskId: task.id, state: 'failed', error: outcome.message }
  }
  // A real import recorded its completion inside its own transaction; a dry run changed nothing.
  if (summary.dryRun) {
    await completeTask(db.sql, task.id, task.runId!, { ...result, rows: summary.rows, bytes: tracker.progress.bytes, details: summary })
  }
  return { taskId: task.id, state: 'succeeded' }
}

async function recordFailure(sql: Sql, taskId: string, runId: string, err: unknown, settings: RunSettings): Promise<Outcome> {
  try {
    if (err instanceof TaskStopped) {
      if (err.reason === 'lost') return { taskId, state: 'lost' }
      return { taskId, state: (await markCancelled(sql, taskId, runId)) ? 'cancelled' : 'lost' }
    }
    if (isUserError(err)) {
      await failTask(sql, taskId, runId, { code: err.code, message: err.message, sqlState: err.sqlState })
      return { taskId, state: 'failed', error: err.message }
    }
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
      const message = 'The disk holding the storage directory is full. Free some space, then retry the task.'
      await failTask(sql, taskId, runId, { code: 'DISK_FULL', message })
      return { taskId, state: 'failed', error: message }
    }
    const message = describe(err)
    const sqlState = sqlStateOf(err)
    if (sqlState === '42501') {
      // The requester's PostgreSQL role lacks a grant (or row-level security said no).
      const failure = `Not allowed: ${message}. Ask the database's owner for the grant, or use a token with another role.`
      await failTask(sql, taskId, runId, { code: 'PERMISSION_DENIED', message: failure, sqlState })
      return { taskId, state: 'failed', error: failure }
    }
    if (isStatementTimeout(err)) {
      // It would run as long again: fail it, and name the limit that stopped it.
      const failure = `A query of this task ran longer than ${settings.statementTimeoutMs.toLocaleString('en-US')} ms (TASK_STATEMENT_TIMEOUT_MS) and was stopped. Narrow the task, or ask the operator to raise the limit.`
      await failTask(sql, taskId, runId, { code: 'STATEMENT_TIMEOUT', message: failure, sqlState })
      return { taskId, state: 'failed', error: failure }
    }
    if (isTransient(err)) {
      const verdict = await retryLater(sql, taskId, runId, { code: 'TRANSIENT', message, sqlState })
      return { taskId, state: verdict === 'retry' ? 'retry' : verdict, error: message }
    }
    // Never a raw SQLSTATE or errno as the code: a name from the table, the SQLSTATE beside it.
    await failTask(sql, taskId, runId, { code: sqlState ? nameSqlState(sqlState) : 'INTERNAL', message, sqlState })
    return { taskId, state: 'failed', error: message }
  } catch (writeError) {
    // The database is unreachable: leave the lease to lapse; the task will be taken up again.
    return { taskId, state: 'lost', error: `${describe(err)}; and could not record it: ${describe(writeError)}` }
  }
}

// postgres.js names a dropped connection by its code only ("write CONNECTION_CLOSED 127.0.0.1:5432").
const CONNECTION_LOST = new Set(['CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'ECONNRESET', 'EPIPE'])

function describe(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err)
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code === 'string' && CONNECTION_LOST.has(code)) return `The connection to the database was lost (${message}).`
  return message
}
