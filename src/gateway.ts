import path from 'node:path'
import type { AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'
import { ensureAdminToken, loadLinkSigner } from './auth/index.ts'
import type { Config } from './config.ts'
import { openDatabase } from './db/client.ts'
import { startEmbeddedPostgres, type EmbeddedPostgres } from './db/embedded.ts'
import { migrateDatabase } from './db/migrate.ts'
import { seedDemoDataset } from './datasets/demo.ts'
import { createApp } from './http/index.ts'
import { startRetentionSweeper } from './retention/index.ts'
import { createStorage } from './storage/index.ts'
import { startDispatcher } from './tasks/dispatcher.ts'

export type Gateway = Awaited<ReturnType<typeof startGateway>>

/**
 * Starts everything in order: storage, the database (embedded unless
 * DATABASE_URL), migrations, the task dispatcher and the HTTP server.
 * `stop` undoes it in reverse, letting running tasks finish for `graceMs`.
 */
export async function startGateway(config: Config, log: (message: string) => void = console.log) {
  const storage = createStorage(config.storageDir)
  await storage.prepare()

  let embedded: EmbeddedPostgres | null = null
  let databaseUrl = config.databaseUrl
  if (databaseUrl === null) {
    embedded = await startEmbeddedPostgres(path.join(config.storageDir, 'postgres'), (line) => log(`[postgres] ${line}`))
    databaseUrl = embedded.url
    log(`embedded PostgreSQL ready (data in ${path.join(config.storageDir, 'postgres')})`)
  }
  // Every query of the web side (requests, claims, the sweep) is bounded: none can hold
  // one of the pool's connections from everyone else for longer.
  const sql = openDatabase(databaseUrl, { statementTimeoutMs: config.requestStatementTimeoutMs })
  let linkSigner
  let newAdminToken: string | null
  try {
    await migrateDatabase(databaseUrl)
    if (embedded?.created && config.seedDemo) {
      log('first start: seeding the demo dataset "contacts" (100,000 rows)…')
      await seedDemoDataset(sql, config.datasetSchema)
    }
    linkSigner = await loadLinkSigner(sql)
    newAdminToken = await ensureAdminToken(sql, config.adminToken)
  } catch (err) {
    await sql.end({ timeout: 1 })
    await embedded?.stop()
    throw err
  }

  const dispatcher = startDispatcher({
    sql, databaseUrl, storageDir: config.storageDir, schema: config.datasetSchema,
    concurrency: config.taskConcurrency, leaseSeconds: config.taskLeaseSeconds,
    pollSeconds: config.taskPollSeconds, statementTimeoutMs: config.taskStatementTimeoutMs,
    fileRetentionHours: config.fileRetentionHours, log: (m) => log(`[tasks] ${m}`),
  })
  const retention = startRetentionSweeper({
    sql, storage, intervalMs: config.retentionSweepSeconds * 1000, log,
    // Temp files get longer: a slow query can keep an export's temp file unwritten for a while.
    settings: { retentionHours: config.fileRetentionHours, orphanGraceMs: 3600_000, staleTempMs: 6 * 3600_000 },
  })
  const app = createApp({ sql, config, storage, linkSigner, isReady: () => databaseAnswers(sql) })
  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: config.port, hostname: config.host }, () => resolve(s))
    s.once('error', reject)
  })
  // Node ends any request still arriving after 5 minutes (requestTimeout): a 5 GB upload
  // over a slow link would die. Instead a connection that stays silent for 2 minutes is
  // dropped; headersTimeout (60 s) still guards against slowly trickled headers.
  const http = server as unknown as { requestTimeout: number; setTimeout: (ms: number) => void }
  http.requestTimeout = 0
  http.setTimeout(120_000)
  server.on('clientError', answerUnparsableRequest)
  const { port } = server.address() as AddressInfo
  const host = config.host.includes(':') ? `[${config.host}]` : config.host
  const url = `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`

  if (newAdminToken) {
    // As Jupyter does: the one time this secret is shown. Only its hash is stored.
    log(`no admin token existed, so one was made. Sign in with this link; it is shown only this once, so keep it secret and safe:\n\n    ${url}/sign-in?token=${newAdminToken}\n`)
  }

  let stopping: Promise<void> | null = null
  return { url, port, databaseUrl, sql, dispatcher, retention, storage, stop: (graceMs = 10_000) => (stopping ??= stop(graceMs)) }

  async function stop(graceMs: number) {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    // close() waits for keep-alive sockets; idle ones would hold the shutdown for seconds.
    ;(server as { closeIdleConnections?: () => void }).closeIdleConnections?.()
    await Promise.all([closed, dispatcher.stop(graceMs), retention.stop()])
    await sql.end({ timeout: 5 })
    await embedded?.stop()
  }
}

async function databaseAnswers(sql: ReturnType<typeof openDatabase>): Promise<boolean> {
  const timeout = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 2_000).unref())
  const probe = sql`select 1 from sluice.migrations limit 1`.then(() => true, () => false)
  return Promise.race([probe, timeout])
}

/**
 * Requests Node refuses before any route runs (headers over its 16 KiB limit, a
 * malformed request line) get the same JSON error shape as the API, not a bare status line.
 */
function answerUnparsableRequest(err: NodeJS.ErrnoException, socket: import('node:stream').Duplex) {
  if (!socket.writable || err.code === 'ECONNRESET') return void socket.destroy()
  const [status, code, error] = err.code === 'HPE_HEADER_OVERFLOW'
    ? ['431 Request Header Fields Too Large', 'HEADERS_TOO_LARGE', 'The request headers are larger than the 16 KiB this server accepts.']
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? ['408 Request Timeout', 'REQUEST_TIMEOUT', 'The request took too long to arrive.']
      : ['400 Bad Request', 'BAD_REQUEST', 'The request is not valid HTTP.']
  const body = JSON.stringify({ error, code })
  socket.end(`HTTP/1.1 ${status}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
}
