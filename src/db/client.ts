import postgres from 'postgres'

export type Sql = postgres.Sql

/** A postgres.js pool. Notices ("schema already exists, skipping") are not worth a log line. */
export function openDatabase(url: string, options: { max?: number; applicationName?: string; readOnly?: boolean } = {}): Sql {
  return postgres(url, {
    max: options.max ?? 10,
    onnotice: () => {},
    connection: {
      application_name: options.applicationName ?? 'sluice',
      // A session that cannot write, whatever the SQL it runs calls.
      ...(options.readOnly ? { default_transaction_read_only: true } : {}),
    },
    // int8 counts come back as JS numbers: every count we keep is far below 2^53.
    types: { bigint: { to: 20, from: [20], serialize: (n: number) => String(n), parse: (s: string) => Number(s) } },
  })
}
