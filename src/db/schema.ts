import { sql } from 'drizzle-orm'
import { bigint, check, index, integer, jsonb, pgSchema, real, text, timestamp, uuid } from 'drizzle-orm/pg-core'

/** The gateway's own tables live apart from the datasets, in schema `sluice`. */
export const sluice = pgSchema('sluice')

export const TASK_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const
export type TaskState = (typeof TASK_STATES)[number]
export const TASK_KINDS = ['export', 'import'] as const
export type TaskKind = (typeof TASK_KINDS)[number]

/**
 * One row per background task: it is both the unit of work and the queue.
 * Workers write progress and results straight into it; the web side only reads it.
 */
export const tasks = sluice.table('tasks', {
  id: uuid('id').primaryKey().defaultRandom(),
  kind: text('kind').$type<TaskKind>().notNull(),
  dataset: text('dataset').notNull(),
  state: text('state').$type<TaskState>().notNull().default('queued'),
  /** What to do: the validated export or import request. */
  params: jsonb('params').notNull(),

  progressRows: bigint('progress_rows', { mode: 'number' }).notNull().default(0),
  progressBytes: bigint('progress_bytes', { mode: 'number' }).notNull().default(0),
  /** Best estimate of the rows (exports) or bytes (imports) the task will process. */
  progressTotal: bigint('progress_total', { mode: 'number' }),
  progressPercent: real('progress_percent').notNull().default(0),

  attempts: integer('attempts').notNull().default(0),
  maxAttempts: integer('max_attempts').notNull().default(3),
  runAfter: timestamp('run_after', { withTimezone: true }).notNull().defaultNow(),
  /** Fencing token of the current attempt: every write a worker makes is conditional on it. */
  runId: uuid('run_id'),
  lockedBy: text('locked_by'),
  leaseExpiresAt: timestamp('lease_expires_at', { withTimezone: true }),
  cancelRequestedAt: timestamp('cancel_requested_at', { withTimezone: true }),

  errorCode: text('error_code'),
  error: text('error'),

  resultKey: text('result_key'),
  resultName: text('result_name'),
  resultSize: bigint('result_size', { mode: 'number' }),
  resultSha256: text('result_sha256'),
  resultExpiresAt: timestamp('result_expires_at', { withTimezone: true }),
  /** Kind-specific outcome shown to the user (import dialect and counts, ...). */
  details: jsonb('details').notNull().default({}),

  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  startedAt: timestamp('started_at', { withTimezone: true }),
  finishedAt: timestamp('finished_at', { withTimezone: true }),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [
  check('tasks_state_known', sql`${t.state} in ('queued', 'running', 'succeeded', 'failed', 'cancelled')`),
  check('tasks_kind_known', sql`${t.kind} in ('export', 'import')`),
  index('tasks_claimable').on(t.runAfter).where(sql`${t.state} = 'queued'`),
  index('tasks_leased').on(t.leaseExpiresAt).where(sql`${t.state} = 'running'`),
  index('tasks_recent').on(t.createdAt),
])

/**
 * A stored upload, waiting for (or used by) an import task. The file itself is in
 * storage under `storageKey`, decompressed; `fileName` is the client's name, for display only.
 */
export const uploads = sluice.table('uploads', {
  id: uuid('id').primaryKey().defaultRandom(),
  dataset: text('dataset').notNull(),
  storageKey: text('storage_key').notNull(),
  fileName: text('file_name'),
  size: bigint('size', { mode: 'number' }).notNull(),
  sha256: text('sha256').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
})
