import path from 'node:path'

/** Everything the gateway reads from its environment, validated once at start. */
export type Config = Readonly<{
  port: number
  host: string
  /** null: start the embedded PostgreSQL under `storageDir/postgres`. */
  databaseUrl: string | null
  storageDir: string
  datasetSchema: string
  /** How many tasks one gateway process runs at once (the piscina pool's size). */
  taskConcurrency: number
  /** A running task whose lease is not renewed for this long is taken up again by another process. */
  taskLeaseSeconds: number
  taskMaxAttempts: number
  /** How often an idle dispatcher looks for work unprompted: NOTIFY wakes it at once, the poll finds retries whose backoff has passed. */
  taskPollSeconds: number
  /** How long finished files stay downloadable and uploads are kept. */
  fileRetentionHours: number
  /** How often the retention sweep deletes expired, orphan and stale temp files. */
  retentionSweepSeconds: number
  /** On SIGTERM, how long running tasks may go on before they are handed back to the queue. */
  shutdownGraceSeconds: number
  /** Largest upload accepted, counted after gzip is inflated. */
  maxUploadBytes: number
  /** Seed the demo dataset on the embedded database's first start. */
  seedDemo: boolean
  /** An admin token for scripts, kept (hashed) in the database; null: one is generated on first start. */
  adminToken: string | null
  /** How long a browser session lasts after signing in. */
  sessionHours: number
  /** Trust X-Forwarded-Proto from a TLS-terminating proxy (Secure cookies, HSTS). */
  trustProxy: boolean
  /** Tasks one (non-admin) token may have queued and running at once; null: no limit. */
  tokenMaxActiveTasks: number | null
  /** Bytes of uploads and result files one (non-admin) token may hold in storage; null: no limit. */
  tokenMaxStoredBytes: number | null
  /** How many requests of one (non-admin) token run at once; more wait their turn. */
  tokenMaxConcurrentRequests: number
  /** The statement_timeout of the web side's sessions: no request holds a connection longer. */
  requestStatementTimeoutMs: number
  /** The statement_timeout of a task's data queries (its COPY, its merge); 0: none. */
  taskStatementTimeoutMs: number
}>

const DEFAULTS = {
  PORT: '8080',
  HOST: '127.0.0.1',
  STORAGE_DIR: './storage',
  DATASET_SCHEMA: 'public',
  TASK_CONCURRENCY: '2',
  TASK_LEASE_SECONDS: '30',
  TASK_MAX_ATTEMPTS: '3',
  TASK_POLL_SECONDS: '2',
  FILE_RETENTION_HOURS: '168',
  RETENTION_SWEEP_SECONDS: '900',
  SHUTDOWN_GRACE_SECONDS: '20',
  MAX_UPLOAD_BYTES: String(5 * 1024 ** 3),
  SEED_DEMO: 'true',
  SESSION_HOURS: '12',
  TRUST_PROXY: 'false',
  TOKEN_MAX_ACTIVE_TASKS: '20',
  TOKEN_MAX_STORED_BYTES: String(50 * 1024 ** 3),
  TOKEN_MAX_CONCURRENT_REQUESTS: '3',
  REQUEST_STATEMENT_TIMEOUT_MS: '5000',
  TASK_STATEMENT_TIMEOUT_MS: String(3600_000),
} as const

type Env = Record<string, string | undefined>

/** Parses the environment; returns every problem at once rather than stopping at the first. */
export function parseConfig(env: Env): { config: Config; problems: string[] } {
  const problems: string[] = []
  const read = (name: keyof typeof DEFAULTS) => (env[name] ?? '').trim() || DEFAULTS[name]

  const integer = (name: keyof typeof DEFAULTS, min: number, max: number) => {
    const text = read(name)
    const value = Number(text)
    if (!/^\d+$/.test(text) || value < min || value > max) {
      problems.push(`${name} must be a whole number from ${min} to ${max}, got "${text}"`)
    }
    return value
  }

  const databaseUrl = env.DATABASE_URL?.trim() || null
  if (databaseUrl !== null && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    problems.push('DATABASE_URL must start with postgres:// or postgresql://, e.g. postgres://user:pass@host:5432/db')
  }

  const datasetSchema = read('DATASET_SCHEMA')
  if (datasetSchema.length > 63) problems.push(`DATASET_SCHEMA must be at most 63 bytes, got ${datasetSchema.length}`)
  if (datasetSchema === 'sluice') problems.push('DATASET_SCHEMA cannot be "sluice": that schema holds the gateway\'s own tables')

  const boolean = (name: 'SEED_DEMO' | 'TRUST_PROXY') => {
    const text = read(name).toLowerCase()
    if (!['true', 'false', '1', '0'].includes(text)) problems.push(`${name} must be true or false, got "${text}"`)
    return text === 'true' || text === '1'
  }

  const adminToken = env.GATEWAY_ADMIN_TOKEN?.trim() || null
  // A guessable admin token would be the weakest door: ask for at least 128 bits' worth.
  if (adminToken !== null && (adminToken.length < 24 || !/^[\x21-\x7e]+$/.test(adminToken))) {
    problems.push('GATEWAY_ADMIN_TOKEN must be at least 24 printable characters without spaces (e.g. the output of `openssl rand -hex 32`)')
  }

  const config: Config = Object.freeze({
    port: integer('PORT', 0, 65535),
    host: read('HOST'),
    databaseUrl,
    storageDir: path.resolve(read('STORAGE_DIR')),
    datasetSchema,
    taskConcurrency: integer('TASK_CONCURRENCY', 1, 64),
    taskLeaseSeconds: integer('TASK_LEASE_SECONDS', 2, 3600),
    taskMaxAttempts: integer('TASK_MAX_ATTEMPTS', 1, 100),
    taskPollSeconds: integer('TASK_POLL_SECONDS', 1, 3600),
    fileRetentionHours: integer('FILE_RETENTION_HOURS', 1, 24 * 365 * 10),
    retentionSweepSeconds: integer('RETENTION_SWEEP_SECONDS', 1, 24 * 3600),
    shutdownGraceSeconds: integer('SHUTDOWN_GRACE_SECONDS', 0, 3600),
    maxUploadBytes: integer('MAX_UPLOAD_BYTES', 1, Number.MAX_SAFE_INTEGER),
    seedDemo: boolean('SEED_DEMO'),
    adminToken,
    sessionHours: integer('SESSION_HOURS', 1, 24 * 90),
    trustProxy: boolean('TRUST_PROXY'),
    // 0 turns a quota off.
    tokenMaxActiveTasks: integer('TOKEN_MAX_ACTIVE_TASKS', 0, 1_000_000) || null,
    tokenMaxStoredBytes: integer('TOKEN_MAX_STORED_BYTES', 0, Number.MAX_SAFE_INTEGER) || null,
    // Of the request pool's ten connections, one token holds this many at most.
    tokenMaxConcurrentRequests: integer('TOKEN_MAX_CONCURRENT_REQUESTS', 1, 1_000),
    // No 0 here: a request without a bound is what let one token hold every connection.
    requestStatementTimeoutMs: integer('REQUEST_STATEMENT_TIMEOUT_MS', 100, 600_000),
    taskStatementTimeoutMs: integer('TASK_STATEMENT_TIMEOUT_MS', 0, 2_147_483_647),
  })
  return { config, problems }
}

/** The only reader of process.env: exits with every problem listed. */
export function loadConfig(): Config {
  const { config, problems } = parseConfig(process.env)
  if (problems.length > 0) {
    console.error(`sluice cannot start; fix these settings:\n  ${problems.join('\n  ')}`)
    process.exit(1)
  }
  return config
}
