import type { Sql } from '../db/client.ts'
import type { TaskKind, TaskState } from '../db/schema.ts'
import { UserError } from '../errors.ts'

// The queue, in SQL. A task row is the job: claiming is one statement with
// `for update skip locked`, a lease renewed by heartbeat keeps it, and every write
// a worker makes is fenced by the attempt's run_id, so a worker that lost its lease
// (its process stalled, another took over) can no longer touch the row.

export type TaskRow = {
  id: string
  kind: TaskKind
  dataset: string
  state: TaskState
  params: Record<string, unknown>
  progressRows: number
  progressBytes: number
  progressTotal: number | null
  progressPercent: number
  attempts: number
  maxAttempts: number
  runId: string | null
  lockedBy: string | null
  leaseExpiresAt: Date | null
  cancelRequestedAt: Date | null
  errorCode: string | null
  error: string | null
  sqlState: string | null
  cancelReason: string | null
  resultKey: string | null
  resultName: string | null
  resultSize: number | null
  resultSha256: string | null
  resultExpiresAt: Date | null
  details: Record<string, unknown>
  resultExpiredAt: Date | null
  ownerId: string | null
  runAsRole: string | null
  createdAt: Date
  startedAt: Date | null
  finishedAt: Date | null
}

const COLUMNS = (sql: Sql) => sql`
  id, kind, dataset, state, params,
  progress_rows as "progressRows", progress_bytes as "progressBytes", progress_total as "progressTotal",
  progress_percent as "progressPercent", attempts, max_attempts as "maxAttempts", run_id as "runId",
  locked_by as "lockedBy", lease_expires_at as "leaseExpiresAt", cancel_requested_at as "cancelRequestedAt",
  error_code as "errorCode", error, sql_state as "sqlState", cancel_reason as "cancelReason", result_key as "resultKey", result_name as "resultName",
  result_size as "resultSize", result_sha256 as "resultSha256", result_expires_at as "resultExpiresAt",
  details, result_expired_at as "resultExpiredAt", owner_id as "ownerId", run_as_role as "runAsRole",
  created_at as "createdAt", started_at as "startedAt", finished_at as "finishedAt"
`

export type NewTask = {
  kind: TaskKind
  dataset: string
  params: object
  progressTotal?: number | null
  maxAttempts: number
  ownerId?: string | null
  runAsRole?: string | null
  /** How many queued and running tasks the owner may have, this one included; null: no limit. */
  maxActiveTasks?: number | null
}

/** Queues a task; over the owner's limit of active tasks, refuses it with 429. */
export async function enqueueTask(sql: Sql, task: NewTask): Promise<TaskRow> {
  const limit = task.maxActiveTasks ?? null
  if (limit === null || !task.ownerId) return insertTask(sql, task)
  return sql.begin(async (tx) => {
    // One enqueue per owner at a time: concurrent requests must not all count the same free slot.
    await tx`select pg_advisory_xact_lock(hashtext('sluice.active_tasks'), hashtext(${task.ownerId!}))`
    const active = await countActiveTasks(tx as unknown as Sql, task.ownerId!)
    if (active >= limit) throw tooManyActiveTasks(limit)
    return insertTask(tx as unknown as Sql, task)
  })
}

export async function countActiveTasks(sql: Sql, ownerId: string): Promise<number> {
  const [row] = await sql<{ active: number }[]>`
    select count(*)::int as active from sluice.tasks
    where owner_id = ${ownerId} and state in ('queued', 'running')`
  return row!.active
}

export const tooManyActiveTasks = (limit: number) => new UserError(
  'TOO_MANY_TASKS',
  `This token already has ${limit} tasks queued or running, its limit (TOKEN_MAX_ACTIVE_TASKS). Wait for some to finish, or cancel some, then try again.`,
  429,
  { retryAfterSeconds: 10 },
)

async function insertTask(sql: Sql, task: NewTask): Promise<TaskRow> {
  const [row] = await sql<TaskRow[]>`
    insert into sluice.tasks (kind, dataset, params, progress_total, max_attempts, owner_id, run_as_role)
    values (${task.kind}, ${task.dataset}, ${sql.json(task.params as never)}, ${task.progressTotal ?? null}, ${task.maxAttempts},
            ${task.ownerId ?? null}, ${task.runAsRole ?? null})
    returning ${COLUMNS(sql)}
  `
  return row!
}

export async function getTask(sql: Sql, id: string): Promise<TaskRow | null> {
  if (!isUuid(id)) return null
  const [row] = await sql<TaskRow[]>`select ${COLUMNS(sql)} from sluice.tasks where id = ${id}`
  return row ?? null
}

/** The latest tasks; of one owner only, unless `ownerId` is null (an admin's view). */
export async function listRecentTasks(sql: Sql, ownerId: string | null, limit = 50): Promise<TaskRow[]> {
  return sql<TaskRow[]>`
    select ${COLUMNS(sql)} from sluice.tasks
    where ${ownerId}::uuid is null or owner_id = ${ownerId}
    order by created_at desc limit ${limit}`
}

/**
 * Sends a failed or cancelled task (the dead letters) back to the queue with fresh
 * attempts. What ended it is kept in `details.previousRun`; the old result file's
 * key is returned so the caller can delete the file.
 */
export async function retryTask(sql: Sql, id: string): Promise<{ task: TaskRow; oldFileKey: string | null } | null> {
  if (!isUuid(id)) return null
  const [row] = await sql<(TaskRow & { oldFileKey: string | null })[]>`
    with old as (
      -- renamed: in the update below, bare names must mean the task's new values
      select id as old_id, result_key as old_key, jsonb_build_object(
               'state', state, 'errorCode', error_code, 'error', error, 'sqlState', sql_state, 'cancelReason', cancel_reason,
               'attempts', attempts, 'finishedAt', finished_at) as run
      from sluice.tasks where id = ${id} and state in ('failed', 'cancelled')
      for update
    )
    update sluice.tasks t
    set state = 'queued', attempts = 0, run_after = now(), run_id = null, locked_by = null, lease_expires_at = null,
        cancel_requested_at = null, cancel_reason = null, error_code = null, error = null, sql_state = null,
        progress_rows = 0, progress_bytes = 0, progress_percent = 0,
        result_key = null, result_name = null, result_size = null, result_sha256 = null,
        result_expires_at = null, result_expired_at = null,
        details = jsonb_build_object('previousRun', old.run),
        started_at = null, finished_at = null, updated_at = now()
    from old
    where t.id = old.old_id
    returning ${COLUMNS(sql)}, old.old_key as "oldFileKey"`
  if (!row) return null
  const { oldFileKey, ...task } = row
  return { task, oldFileKey }
}

/** Claims the oldest runnable task, or a running one whose holder stopped renewing its lease. */
export async function claimTask(sql: Sql, workerId: string, leaseSeconds: number): Promise<TaskRow | null> {
  const [row] = await sql<TaskRow[]>`
    with next as (
      select id as next_id
      from sluice.tasks
      where (state = 'queued' and run_after <= now())
         or (state = 'running' and lease_expires_at < now() and cancel_requested_at is null and attempts < max_attempts)
      order by created_at
      limit 1
      for update skip locked
    )
    update sluice.tasks t
    set state = 'running',
        attempts = attempts + 1,
        run_id = gen_random_uuid(),
        locked_by = ${workerId},
        lease_expires_at = now() + make_interval(secs => ${leaseSeconds}),
        started_at = now(),
        updated_at = now()
    from next
    where t.id = next.next_id
    returning ${COLUMNS(sql)}
  `
  return row ?? null
}

/**
 * Ends tasks whose holder vanished and which may not run again: out of attempts,
 * or cancelled while held. Runs before each claim.
 */
export async function settleAbandonedTasks(sql: Sql): Promise<number> {
  const rows = await sql`
    update sluice.tasks
    set state = case when cancel_requested_at is not null then 'cancelled' else 'failed' end,
        error_code = case when cancel_requested_at is not null then null else 'ABANDONED' end,
        error = case when cancel_requested_at is not null then null
                     else format('The gateway running this task stopped unexpectedly %s times; giving up.', attempts) end,
        run_id = null, lease_expires_at = null, finished_at = clock_timestamp(), updated_at = clock_timestamp()
    where state = 'running'
      and lease_expires_at < now()
      and (cancel_requested_at is not null or attempts >= max_attempts)
    returning id
  `
  return rows.length
}

export async function renewLeases(sql: Sql, workerId: string, runIds: string[], leaseSeconds: number): Promise<void> {
  if (runIds.length === 0) return
  await sql`
    update sluice.tasks
    set lease_expires_at = now() + make_interval(secs => ${leaseSeconds})
    where run_id = any(${sql.array(runIds)}::uuid[]) and locked_by = ${workerId} and state = 'running'
  `
}

export type Progress = { rows: number; bytes: number; total: number | null; percent: number }

/**
 * Writes progress and answers whether to go on: 'cancel' once someone asked,
 * 'lost' when this attempt no longer holds the task.
 */
export async function reportProgress(sql: Sql, id: string, runId: string, progress: Progress): Promise<'go' | 'cancel' | 'lost'> {
  const [row] = await sql<{ cancelRequested: boolean }[]>`
    update sluice.tasks
    set progress_rows = ${progress.rows}, progress_bytes = ${progress.bytes},
        progress_total = coalesce(${progress.total}, progress_total),
        progress_percent = ${progress.percent}, updated_at = now()
    where id = ${id} and run_id = ${runId} and state = 'running'
    returning cancel_requested_at is not null as "cancelRequested"
  `
  if (!row) return 'lost'
  return row.cancelRequested ? 'cancel' : 'go'
}

export type TaskResult = {
  key: string | null
  name: string | null
  size: number | null
  sha256: string | null
  retentionHours: number
  rows: number
  bytes: number
  details?: object
}

/** Records success; false if this attempt had lost the task (the caller then deletes its file). */
export async function completeTask(sql: Sql, id: string, runId: string, result: TaskResult): Promise<boolean> {
  const rows = await sql`
    update sluice.tasks
    set state = 'succeeded', run_id = null, lease_expires_at = null,
        progress_rows = ${result.rows}, progress_bytes = ${result.bytes}, progress_percent = 100,
        result_key = ${result.key}, result_name = ${result.name}, result_size = ${result.size},
        result_sha256 = ${result.sha256},
        result_expires_at = case when ${result.key}::text is null then null else now() + make_interval(hours => ${result.retentionHours}) end,
        details = details || ${sql.json(storable(result.details ?? {}) as never)},
        error_code = null, error = null, sql_state = null,
        finished_at = clock_timestamp(), updated_at = clock_timestamp()
    where id = ${id} and run_id = ${runId} and state = 'running'
    returning id
  `
  return rows.length === 1
}

/**
 * Messages and details quote the file's own text, and PostgreSQL's text and jsonb hold no
 * NUL: one NUL in a header made a failure unrecordable, and the task was taken up again
 * until it was abandoned. NUL is written as \0.
 */
function storable<T extends string | object>(value: T): T {
  if (typeof value === 'string') return value.replaceAll('\0', '\\0') as T
  return JSON.parse(JSON.stringify(value, (_key, v: unknown) => (typeof v === 'string' ? v.replaceAll('\0', '\\0') : v))) as T
}

/** A final failure: bad input, or out of attempts. Kept with its attempts and error for an operator. */
export type ResultFile = { key: string | null; name: string | null; size: number | null; sha256: string | null; retentionHours: number }

/** `code` is a named code; `sqlState` the SQLSTATE behind it, when PostgreSQL raised the error. */
export type TaskError = { code: string; message: string; sqlState?: string | null }

export async function failTask(sql: Sql, id: string, runId: string, error: TaskError, details: object = {}, result: ResultFile | null = null): Promise<boolean> {
  const rows = await sql`
    update sluice.tasks
    set state = 'failed', run_id = null, lease_expires_at = null,
        error_code = ${error.code}, error = ${storable(error.message)}, sql_state = ${error.sqlState ?? null},
        details = details || ${sql.json(storable(details) as never)},
        result_key = ${result?.key ?? null}, result_name = ${result?.name ?? null},
        result_size = ${result?.size ?? null}, result_sha256 = ${result?.sha256 ?? null},
        result_expires_at = case when ${result?.key ?? null}::text is null then null else now() + make_interval(hours => ${result?.retentionHours ?? 0}) end,
        finished_at = clock_timestamp(), updated_at = clock_timestamp()
    where id = ${id} and run_id = ${runId} and state = 'running'
    returning id
  `
  return rows.length === 1
}

export async function markCancelled(sql: Sql, id: string, runId: string): Promise<boolean> {
  const rows = await sql`
    update sluice.tasks
    set state = 'cancelled', run_id = null, lease_expires_at = null, finished_at = clock_timestamp(), updated_at = clock_timestamp()
    where id = ${id} and run_id = ${runId} and state = 'running'
    returning id
  `
  return rows.length === 1
}

/**
 * Puts a task back in the queue after a transient failure (connection reset, deadlock),
 * with exponential backoff; out of attempts, it fails with the last error kept.
 */
export async function retryLater(sql: Sql, id: string, runId: string, error: TaskError): Promise<'retry' | 'failed' | 'lost'> {
  const [row] = await sql<{ state: TaskState }[]>`
    update sluice.tasks
    set state = case when attempts < max_attempts then 'queued' else 'failed' end,
        run_after = now() + make_interval(secs => least(300, 2 ^ attempts)),
        finished_at = case when attempts < max_attempts then null else now() end,
        run_id = null, lease_expires_at = null, locked_by = null,
        error_code = ${error.code}, error = ${storable(error.message)}, sql_state = ${error.sqlState ?? null}, updated_at = now()
    where id = ${id} and run_id = ${runId} and state = 'running'
    returning state
  `
  if (!row) return 'lost'
  return row.state === 'queued' ? 'retry' : 'failed'
}

/** Hands tasks back when the gateway shuts down before they finish; the interrupted attempt does not count. */
export async function releaseTasks(sql: Sql, runIds: string[]): Promise<void> {
  if (runIds.length === 0) return
  await sql`
    update sluice.tasks
    set state = 'queued', attempts = greatest(0, attempts - 1), run_id = null, lease_expires_at = null,
        locked_by = null, run_after = now(), updated_at = now()
    where run_id = any(${sql.array(runIds)}::uuid[]) and state = 'running'
  `
}

export const CANCELLED_BY_REQUEST = 'Cancelled by request.'
export const CANCELLED_BY_REVOKE = 'The token that asked for this task was revoked.'

/**
 * Queued tasks end at once; running ones are flagged and their worker stops within a second or two.
 * Null when the task is not queued or running (finished, or no such id): nothing is changed then.
 */
export async function requestCancel(sql: Sql, id: string, reason = CANCELLED_BY_REQUEST): Promise<TaskRow | null> {
  if (!isUuid(id)) return null
  const [row] = await sql<TaskRow[]>`
    update sluice.tasks
    set ${cancelSet(sql, reason)}
    where id = ${id} and state in ('queued', 'running')
    returning ${COLUMNS(sql)}
  `
  return row ?? null
}

/** Every queued or running task of a token (it was revoked): the same as a cancel of each. */
export async function cancelTasksOfOwner(sql: Sql, ownerId: string, reason: string): Promise<number> {
  const rows = await sql`
    update sluice.tasks
    set ${cancelSet(sql, reason)}
    where owner_id = ${ownerId} and state in ('queued', 'running')
    returning id
  `
  return rows.length
}

// The first reason given stays: a task cancelled by request and then by a revoke was cancelled by request.
const cancelSet = (sql: Sql, reason: string) => sql`
  cancel_requested_at = coalesce(cancel_requested_at, now()),
  cancel_reason = coalesce(cancel_reason, ${reason}::text),
  state = case when state = 'queued' then 'cancelled' else state end,
  finished_at = case when state = 'queued' then now() else finished_at end,
  updated_at = now()`

/** Ids are checked here, before PostgreSQL: a malformed one (36 dashes) is "not found", not a cast error. */
export const isUuid = (id: string) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)
