import { execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import net from 'node:net'
import type postgres from 'postgres'
import { promisify } from 'node:util'

const run = promisify(execFile)

export const seconds = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9
export const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

/** `psql -c "\copy ..."`: the reference, the same server and data. */
export async function psqlCopy(url: string, command: string): Promise<number> {
  const start = process.hrtime.bigint()
  await run('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qc', command], { maxBuffer: 1 << 20 })
  return seconds(start)
}

export async function psqlAvailable(): Promise<boolean> {
  try {
    await run('psql', ['--version'])
    return true
  } catch {
    return false
  }
}

export async function commandAvailable(name: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v ${name}`])
    return true
  } catch {
    return false
  }
}

export { run }

/** Peak resident memory of a process and all its descendants, sampled every 50 ms. */
export function sampleTreeRss(rootPid: number) {
  let peak = 0
  let stopped = false
  const loop = (async () => {
    while (!stopped) {
      const total = await treeRss(rootPid).catch(() => 0)
      peak = Math.max(peak, total)
      await new Promise((r) => setTimeout(r, 50))
    }
  })()
  return {
    reset: () => { peak = 0 },
    peakMb: () => peak / 1024 / 1024,
    stop: async () => { stopped = true; await loop },
  }
}

async function treeRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024
  const children = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')
  const sizes = await Promise.all(children.split(/\s+/).filter(Boolean).map((child) => treeRss(Number(child)).catch(() => 0)))
  return rss + sizes.reduce((a, b) => a + b, 0)
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/** A long random admin token: every route but /healthz needs `Authorization: Bearer`. */
const newAdminToken = () => `sluice_bench_${randomBytes(24).toString('hex')}`

export type GatewayProcess = Awaited<ReturnType<typeof startGatewayProcess>>

/**
 * The gateway as a separate process, as an operator runs it, with an admin token.
 * `nodeArgs` go before the entry file (e.g. `--import` of a probe); the child has an
 * IPC channel, which only a probe that listens to it uses.
 */
export async function startGatewayProcess(env: Record<string, string>, nodeArgs: string[] = []) {
  const port = await freePort()
  const adminToken = newAdminToken()
  const child = spawn(process.execPath, ['--import', 'tsx', ...nodeArgs, 'src/main.ts'], {
    env: { ...process.env, SEED_DEMO: 'false', ...env, GATEWAY_ADMIN_TOKEN: adminToken, PORT: String(port) },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 60_000
  for (;;) {
    if (Date.now() > deadline) throw new Error('the gateway did not answer /healthz within 60 s')
    const ok = await fetch(`${url}/healthz`).then((r) => r.ok, () => false)
    if (ok) break
    await new Promise((r) => setTimeout(r, 200))
  }
  return {
    child,
    url,
    /** A request as the admin. */
    fetch: (pathname: string, init: RequestInit = {}) => {
      const headers = new Headers(init.headers)
      headers.set('Authorization', `Bearer ${adminToken}`)
      return fetch(`${url}${pathname}`, { ...init, headers })
    },
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      await exited
    },
  }
}

export type Task = {
  id: string
  kind: string
  state: string
  error: string | null
  progress: { rows: number }
  download: string | null
  file: { size: number } | null
  details: { rows?: number; inserted?: number }
  createdAt: string
  startedAt: string | null
  finishedAt: string | null
}

export const isFinished = (task: Pick<Task, 'state'>) => ['succeeded', 'failed', 'cancelled'].includes(task.state)

/** Polls a task every 50 ms until it ends. */
export async function waitForTask(gateway: GatewayProcess, id: string): Promise<Task> {
  for (;;) {
    const task = (await (await gateway.fetch(`/api/tasks/${id}`)).json()) as Task
    if (isFinished(task)) return task
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** The columns of every bench table: mixed types, some values holding quotes and commas, some NULL. */
export const BENCH_COLUMNS = `id bigint primary key, name text not null, email text not null, amount numeric(12, 2), created_at timestamptz, active boolean, note text, description text`

/** (Re)creates `table` with `rows` generated rows, about 183 bytes of CSV each. */
export async function buildRowsTable(sql: postgres.Sql, table: string, rows: number): Promise<void> {
  await sql.unsafe(`
    drop table if exists ${table};
    create table ${table} (${BENCH_COLUMNS});
    insert into ${table}
    select i, 'Customer ' || i, 'user' || i || '@example.com', (i * 7919 % 1000000) / 100.0,
           timestamptz '2024-01-01' + make_interval(secs => i * 13 % 31536000), i % 3 <> 0,
           case when i % 7 = 0 then 'said "hi", then left' when i % 11 = 0 then null else '' end,
           repeat(md5(i::text), 3)
    from generate_series(1::bigint, ${rows}) as i;
    analyze ${table};
  `)
}
