/**
 * Something a person can fix: a bad filter, an unknown dataset, a file that is not CSV.
 * It crosses the piscina boundary as { code, message }, so callers branch on `code`, never on instanceof.
 */
export class UserError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: 400 | 401 | 403 | 404 | 409 | 410 | 413 | 415 | 422 | 431 | 503 | 507 = 400,
  ) {
    super(message)
    this.name = 'UserError'
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
