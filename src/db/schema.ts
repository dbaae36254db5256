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

  /** A named code (README, "Error codes"); never a raw SQLSTATE, which goes in `sqlState`. */
  errorCode: text('error_code'),
  error: text('error'),
  /** The SQLSTATE when PostgreSQL raised the error, for an operator to look up. */
  sqlState: text('sql_state'),
  /** Why the task was (or is being) cancelled: by request, or its token was revoked. */
  cancelReason: text('cancel_reason'),

  resultKey: text('result_key'),
  resultName: text('result_name'),
  resultSize: bigint('result_size', { mode: 'number' }),
  resultSha256: text('result_sha256'),
  resultExpiresAt: timestamp('result_expires_at', { withTimezone: true }),
  /** Kind-specific outcome shown to the user (import dialect and counts, ...). */
  details: jsonb('details').notNull().default({}),
  /** When the retention sweep deleted the result file (the task keeps saying so). */
  resultExpiredAt: timestamp('result_expired_at', { withTimezone: true }),

  /** The token that asked for the task: only it and admins may see the task and its files. */
  ownerId: uuid('owner_id'),
  /** The PostgreSQL role the task runs as (`set role` in its transaction); null: the gateway's own. */
  runAsRole: text('run_as_role'),

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
  index('tasks_owner').on(t.ownerId, t.createdAt),
  // The per-token quota counts these on every enqueue.
  index('tasks_active_owner').on(t.ownerId).where(sql`${t.state} in ('queued', 'running')`),
  index('tasks_result_expiry').on(t.resultExpiresAt).where(sql`${t.resultKey} is not null`),
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
  ownerId: uuid('owner_id'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [index('uploads_owner').on(t.ownerId)])

/**
 * Storage an upload in flight has claimed against its token's quota (TOKEN_MAX_STORED_BYTES),
 * so concurrent uploads cannot all see the same free space. Renewed while the upload
 * streams; one whose gateway died lapses at `expiresAt`.
 */
export const storageReservations = sluice.table('storage_reservations', {
  id: uuid('id').primaryKey().defaultRandom(),
  ownerId: uuid('owner_id').notNull(),
  bytes: bigint('bytes', { mode: 'number' }).notNull(),
  expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
}, (t) => [index('storage_reservations_owner').on(t.ownerId, t.expiresAt)])

export const TOKEN_ROLES = ['admin', 'user'] as const
export type TokenRole = (typeof TOKEN_ROLES)[number]

/**
 * API tokens. Only a sha256 of each token is kept: tokens are 256 random bits, so a
 * fast hash is enough, and a leaked table gives no way in.
 */
export const tokens = sluice.table('tokens', {
  id: uuid('id').primaryKey().defaultRandom(),
  name: text('name').notNull(),
  tokenHash: text('token_hash').notNull().unique(),
  role: text('role').$type<TokenRole>().notNull(),
  /** PostgreSQL role this token's requests and tasks run as; null: the gateway's own role. */
  dbRole: text('db_role'),
  createdBy: uuid('created_by'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  lastUsedAt: timestamp('last_used_at', { withTimezone: true }),
  revokedAt: timestamp('revoked_at', { withTimezone: true }),
}, (t) => [check('tokens_role_known', sql`${t.role} in ('admin', 'user')`)])

/** Browser sessions, opened by signing in with a token; they end when the token is revoked. */
export const sessions = sluice.table('sessions', {
  idHash: text('id_hash').primaryKey(),
  tokenId: uuid('token_id').notNull().references(() => tokens.id, { onDelete: 'cascade' }),
  csrfToken: text('csrf_token').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
}, (t) => [index('sessions_expiry').on(t.expiresAt)])

/** Gateway-wide secrets shared by every process on the database (the download-link signing key). */
export const secrets = sluice.table('secrets', {
  name: text('name').primaryKey(),
  value: text('value').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
})
