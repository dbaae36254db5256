export type UserErrorStatus = 400 | 401 | 403 | 404 | 409 | 410 | 413 | 415 | 422 | 429 | 431 | 503 | 507

/**
 * Something a person can fix: a bad filter, an unknown dataset, a file that is not CSV.
 * It crosses the piscina boundary as { code, message }, so callers branch on `code`, never on instanceof.
 * `code` is always a name from the README's "Error codes" table; a SQLSTATE behind it travels apart, as `sqlState`.
 */
export class UserError extends Error {
  readonly sqlState: string | null
  /** Sent as Retry-After: the refusal lifts by itself (a quota of running tasks). */
  readonly retryAfterSeconds: number | null

  constructor(
    readonly code: string,
    message: string,
    readonly status: UserErrorStatus = 400,
    more: { sqlState?: string | null; retryAfterSeconds?: number } = {},
  ) {
    super(message)
    this.name = 'UserError'
    this.sqlState = more.sqlState ?? null
    this.retryAfterSeconds = more.retryAfterSeconds ?? null
  }
}

export const isUserError = (err: unknown): err is UserError => err instanceof UserError

/** SQLSTATE codes that mean "try again later", not "this task is wrong". */
const TRANSIENT_SQLSTATES = new Set(['40001', '40P01', '55P03', '57P01', '57P02', '57P03', '53300', '08000', '08003', '08006', '08001', '08004'])
const TRANSIENT_ERRNOS = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT'])

export function isTransient(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && (TRANSIENT_SQLSTATES.has(code) || TRANSIENT_ERRNOS.has(code))
}

// Error codes are names a script can branch on; the SQLSTATE is kept beside them for an
// operator. Exact codes first, then the SQLSTATE's class (its first two characters).
const SQLSTATE_NAMES: Record<string, string> = {
  '23505': 'KEY_EXISTS',
  '23503': 'FOREIGN_KEY',
  '23502': 'NOT_NULL',
  '23514': 'CHECK_FAILED',
  '22P02': 'BAD_VALUE',
  '22012': 'DIVISION_BY_ZERO',
  '22001': 'VALUE_TOO_LONG',
  '22003': 'NUMBER_OUT_OF_RANGE',
  '42501': 'PERMISSION_DENIED',
  '42P01': 'UNDEFINED_TABLE',
  '42703': 'UNDEFINED_COLUMN',
  '25006': 'READ_ONLY',
  '40001': 'SERIALIZATION_FAILURE',
  '40P01': 'DEADLOCK',
  '55P03': 'LOCK_NOT_AVAILABLE',
  '57014': 'QUERY_CANCELLED',
  '53100': 'DATABASE_DISK_FULL',
  '53200': 'DATABASE_OUT_OF_MEMORY',
  '53300': 'DATABASE_TOO_MANY_CONNECTIONS',
  P0001: 'RAISED_EXCEPTION',
}
const SQLSTATE_CLASS_NAMES: Record<string, string> = {
  '08': 'DATABASE_UNAVAILABLE',
  '22': 'BAD_VALUE',
  '23': 'CONSTRAINT_VIOLATION',
  '25': 'TRANSACTION_STATE',
  '40': 'TRANSACTION_ROLLBACK',
  '42': 'QUERY_INVALID',
  '53': 'DATABASE_RESOURCES',
  '54': 'LIMIT_EXCEEDED',
  '57': 'DATABASE_UNAVAILABLE',
  P0: 'RAISED_EXCEPTION',
}

/**
 * The SQLSTATE of an error PostgreSQL raised, or null. Five characters with a digit among
 * them: Node's and postgres.js's own codes (EPIPE, CONNECTION_CLOSED) never have one.
 */
export function sqlStateOf(err: unknown): string | null {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && /\d/.test(code) ? code : null
}

/** The named error code for a SQLSTATE; DATABASE_ERROR for one the tables do not name. */
export function nameSqlState(sqlState: string): string {
  return SQLSTATE_NAMES[sqlState] ?? SQLSTATE_CLASS_NAMES[sqlState.slice(0, 2)] ?? 'DATABASE_ERROR'
}

/**
 * PostgreSQL stopped a statement at statement_timeout. 57014 also means "cancelled on
 * request" (our own query.cancel()); only the message tells the two apart.
 */
export function isStatementTimeout(err: unknown): boolean {
  return sqlStateOf(err) === '57014' && /statement timeout/i.test((err as Error).message ?? '')
}
