import postgres from 'postgres'

export type Sql = postgres.Sql

/** A postgres.js pool. Notices ("schema already exists, skipping") are not worth a log line. */
export function openDatabase(url: string, options: { max?: number; applicationName?: string; readOnly?: boolean; statementTimeoutMs?: number } = {}): Sql {
  return postgres(url, {
    max: options.max ?? 10,
    onnotice: () => {},
    connection: {
      application_name: options.applicationName ?? 'sluice',
      // A session that cannot write, whatever the SQL it runs calls.
      ...(options.readOnly ? { default_transaction_read_only: true } : {}),
      // 0 is PostgreSQL's "none"; unset keeps the server's or role's own setting.
      ...(options.statementTimeoutMs !== undefined ? { statement_timeout: options.statementTimeoutMs } : {}),
    },
    // int8 counts come back as JS numbers: every count we keep is far below 2^53.
    types: { bigint: { to: 20, from: [20], serialize: (n: number) => String(n), parse: (s: string) => Number(s) } },
  })
}

/**
 * Runs `work` in a transaction as PostgreSQL role `role`, so that role's grants and
 * row-level security decide what it reads and writes; null runs it as the gateway's
 * own role. `set_config('role', $1, true)` is `SET LOCAL ROLE` with the name as a
 * bound value, never spliced into SQL; it ends with the transaction.
 */
export async function asRole<T>(sql: Sql, role: string | null, work: (tx: Sql) => Promise<T>): Promise<T> {
  if (role === null) return work(sql)
  return sql.begin(async (tx) => {
    await tx`select set_config('role', ${role}, true)`
    return work(tx as unknown as Sql)
  }) as Promise<T>
}
