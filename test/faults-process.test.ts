// Process-level faults, caused for real: a gateway killed with -9 mid-task, SIGTERM
// with tasks running, the embedded PostgreSQL shut down with the gateway, and the
// database going away under a running task and coming back.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import postgres from 'postgres'
import { startEmbeddedPostgres } from '../src/db/embedded.ts'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { startChildGateway, type ChildGateway } from './support/child-gateway.ts'
import type { TaskJson } from './support/gateway.ts'
import { waitFor } from './support/wait.ts'

let db: TestDatabase
const cleanups: (() => Promise<unknown>)[] = []

const SLOW_EXPORT_ROWS = 3000
const OUTAGE_EXPORT_ROWS = 6000 // about 10 s to export, on a server of its own: long enough to stop it under the export

before(async () => {
  db = await createTestDatabase()
  // About 5 s to export. Wide rows, because PostgreSQL sends COPY output in 8 KB packets: progress shows early.
  await db.sql.unsafe(`create view slow_export as select g as n, repeat('x', 100) || pg_sleep(0.0015)::text as filler from generate_series(1, ${SLOW_EXPORT_ROWS}) g`)
})

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
  await db?.drop()
})


type Row = { state: string; attempts: number; locked_by: string | null; progress_rows: number; progress_bytes: number; lease_left: number | null; error: string | null }

async function taskRow(id: string): Promise<Row> {
  const [row] = await db.sql<Row[]>`
    select state, attempts, locked_by, progress_rows::int, progress_bytes::int, error,
           extract(epoch from lease_expires_at - now())::float8 as lease_left
    from sluice.tasks where id = ${id}`
  return row!
}

/** A child gateway that the test stops (or has killed) itself; any leftover is killed at the end. */
async function childGateway(options: Parameters<typeof startChildGateway>[0]): Promise<ChildGateway> {
  const child = await startChildGateway(options)
  cleanups.push(async () => {
    child.kill('SIGKILL')
    await child.waitForExit(5_000)
  })
  return child
}

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix))
  cleanups.push(() => rm(dir, { recursive: true, force: true }))
  return dir
}

const heldBy = (row: Row, child: ChildGateway) => String(row.locked_by).includes(`:${child.pid}:`)

const PEOPLE_ROWS = 600_000 // about 47 MB: a few seconds of COPY
const PEOPLE_COLUMNS = 'id bigint primary key, name text not null, email text not null, note text'
let peopleCsv: Promise<string> | null = null

/** One generated CSV for every import test, written on first use. */
function peopleFile(): Promise<string> {
  peopleCsv ??= (async () => {
    const file = path.join(await tempDir('sluice-csv-'), 'people.csv')
    await writeLines(file, 'id,name,email,note', PEOPLE_ROWS, (i) => `${i},person ${i},person${i}@example.com,a note about person number ${i}`)
    return file
  })()
  return peopleCsv
}

async function requestImport(gateway: ChildGateway, table: string): Promise<string> {
  const res = await gateway.fetch(`/api/datasets/${table}/imports`, { method: 'POST', body: await readFile(await peopleFile()), headers: { 'Content-Type': 'text/csv' } })
  const created = (await res.json()) as TaskJson
  assert.equal(res.status, 202, JSON.stringify(created))
  return created.id
}

test('kill -9 during an import: nothing is committed, and the next gateway loads the file exactly once', { timeout: 120_000 }, async (t) => {
  const ROWS = PEOPLE_ROWS
  await db.sql.unsafe(`create table people (${PEOPLE_COLUMNS})`)
  const storageDir = await tempDir('sluice-kill-import-')
  const csv = await peopleFile()

  const first = await childGateway({ databaseUrl: db.url, storageDir, env: { TASK_LEASE_SECONDS: '3' } })
  const id = await requestImport(first, 'people')

  const loading = await waitFor('the first gateway to be loading the file', async () => {
    const row = await taskRow(id)
    return row.state === 'running' && heldBy(row, first) && row.progress_bytes > 0 && row
  })
  first.kill('SIGKILL')
  assert.equal((await first.waitForExit()).signal, 'SIGKILL')
  const size = (await readFile(csv)).length
  assert.ok(loading.progress_bytes < size, 'killed before the whole file was read')
  t.diagnostic(`killed after ${loading.progress_bytes} of ${size} bytes`)

  const orphaned = await taskRow(id)
  assert.equal(orphaned.state, 'running', 'nobody recorded an end: the task waits for its lease to lapse')
  assert.equal(orphaned.attempts, 1)
  assert.ok(orphaned.lease_left !== null && orphaned.lease_left <= 3, `the lease lapses within 3 s (${orphaned.lease_left} s left)`)
  // The server notices the dead client and rolls its transaction back; nothing of it is ever visible.
  await waitFor('the killed import\'s session to end', async () => {
    const [row] = await db.sql`select count(*)::int as n from pg_stat_activity where application_name = ${`sluice task ${id}`}`
    return row!.n === 0
  })
  assert.deepEqual([...await db.sql`select count(*)::int as n from people`], [{ n: 0 }])

  const second = await childGateway({ databaseUrl: db.url, storageDir, env: { TASK_LEASE_SECONDS: '3' } })
  const retaking = Date.now()
  const done = await waitFor('the second gateway to finish the import', async () => {
    const row = await taskRow(id)
    return ['succeeded', 'failed'].includes(row.state) && row
  }, 90_000)
  assert.equal(done.state, 'succeeded', done.error ?? '')
  assert.equal(done.attempts, 2)
  assert.ok(heldBy(done, second), 'the second gateway took it up')
  t.diagnostic(`the second gateway finished ${Date.now() - retaking} ms after it started`)
  assert.deepEqual([...await db.sql`select count(*)::int as n, count(distinct id)::int as keys, min(id)::int as low, max(id)::int as high from people`],
    [{ n: ROWS, keys: ROWS, low: 1, high: ROWS }])
  const task = (await (await second.fetch(`/api/tasks/${id}`)).json()) as TaskJson & { details: { rows: number; inserted: number } }
  assert.equal(task.details.inserted, ROWS)
  second.kill('SIGTERM')
  assert.equal((await second.waitForExit()).code, 0)
})

test('kill -9 during an export: no truncated file is ever served, and the retaken export is whole', { timeout: 120_000 }, async (t) => {
  const ROWS = SLOW_EXPORT_ROWS
  const storageDir = await tempDir('sluice-kill-export-')
  const first = await childGateway({ databaseUrl: db.url, storageDir, env: { TASK_LEASE_SECONDS: '3' } })
  const res = await first.fetch('/api/datasets/slow_export/exports', { method: 'POST' })
  const created = (await res.json()) as TaskJson
  assert.equal(res.status, 202, JSON.stringify(created))
  const id = created.id

  const writing = await waitFor('the first gateway to be writing the file', async () => {
    const row = await taskRow(id)
    return row.state === 'running' && heldBy(row, first) && row.progress_rows > 0 && row
  })
  assert.equal((await first.fetch(`/api/tasks/${id}/download`)).status, 409, 'no file while it is being written')
  first.kill('SIGKILL')
  assert.equal((await first.waitForExit()).signal, 'SIGKILL')
  const leftovers = await readdir(path.join(storageDir, 'tmp'))
  t.diagnostic(`killed after ${writing.progress_rows} of ${ROWS} rows; left in tmp/: ${leftovers.join(', ') || 'nothing'}`)
  assert.deepEqual(await filesUnder(path.join(storageDir, 'exports')), [], 'nothing half-written was committed')

  const second = await childGateway({ databaseUrl: db.url, storageDir, env: { TASK_LEASE_SECONDS: '3' } })
  const orphaned = await second.fetch(`/api/tasks/${id}/download`)
  assert.equal(orphaned.status, 409, 'the killed attempt left no file to serve')
  const whileRetaken = (await (await second.fetch(`/api/tasks/${id}`)).json()) as TaskJson
  assert.equal(whileRetaken.download, null)
  assert.equal(whileRetaken.file, null)

  const done = await waitFor('the second gateway to finish the export', async () => {
    const row = await taskRow(id)
    return ['succeeded', 'failed'].includes(row.state) && row
  }, 60_000)
  assert.equal(done.state, 'succeeded', done.error ?? '')
  assert.equal(done.attempts, 2)
  assert.ok(heldBy(done, second), 'the second gateway took it up')
  const task = (await (await second.fetch(`/api/tasks/${id}`)).json()) as TaskJson
  const download = await second.fetch(`/api/tasks/${id}/download`)
  assert.equal(download.status, 200)
  const bytes = Buffer.from(await download.arrayBuffer())
  const lines = bytes.toString('utf8').trimEnd().split('\n')
  assert.equal(lines.length, ROWS + 1, 'the header and every row')
  assert.equal(lines[0], 'n,filler')
  assert.equal(lines.at(-1), `${ROWS},${'x'.repeat(100)}`)
  assert.equal(bytes.length, task.file!.size)
  assert.equal(sha256(bytes), task.file!.sha256)
  assert.equal((await filesUnder(path.join(storageDir, 'exports'))).length, 1, 'one committed file: the second attempt\'s')
  second.kill('SIGTERM')
  assert.equal((await second.waitForExit()).code, 0)
})

test('SIGTERM past the grace period: the running task goes back to the queue, its attempt not counted, and nothing new is claimed', { timeout: 60_000 }, async (t) => {
  const storageDir = await tempDir('sluice-sigterm-')
  const gateway = await childGateway({ databaseUrl: db.url, storageDir, env: { SHUTDOWN_GRACE_SECONDS: '1', TASK_CONCURRENCY: '1', TASK_LEASE_SECONDS: '3' } })
  const running = await requestExport(gateway, 'slow_export')
  await waitFor('the export to run', async () => {
    const row = await taskRow(running)
    return row.state === 'running' && row.progress_rows > 0
  })
  const waiting = await requestExport(gateway, 'slow_export') // one slot: this one waits its turn

  gateway.kill('SIGTERM')
  const signalled = Date.now()
  const lateComer = await requestExportInDatabase('slow_export') // NOTIFY reaches the stopping gateway
  const exit = await gateway.waitForExit(15_000)
  const took = Date.now() - signalled
  t.diagnostic(`exited ${took} ms after SIGTERM (grace 1 s)`)
  assert.deepEqual(exit, { code: 0, signal: null }, gateway.output().stderr)
  assert.ok(took < 1_000 + 4_000, `exited within the grace period and a few seconds (${took} ms)`)
  assert.match(gateway.output().stdout, /handing 1 unfinished task\(s\) back to the queue/)

  const handedBack = await taskRow(running)
  assert.equal(handedBack.state, 'queued')
  assert.equal(handedBack.attempts, 0, 'the interrupted attempt does not count')
  assert.equal(handedBack.locked_by, null)
  assert.equal(handedBack.error, null, 'not failed')
  for (const id of [waiting, lateComer]) {
    const row = await taskRow(id)
    assert.equal(row.state, 'queued', 'not claimed after the signal')
    assert.equal(row.attempts, 0)
  }
  assert.equal(gateway.output().stdout.match(/claimed export/g)?.length, 1, 'the gateway claimed only the first task')
  await db.sql`delete from sluice.tasks where id = any(${[running, waiting, lateComer]}::uuid[])`
})

test('SIGTERM past the grace period during an import: nothing is committed, the task is handed back, and the next start loads it once', { timeout: 120_000 }, async (t) => {
  await db.sql.unsafe(`create table people_interrupted (${PEOPLE_COLUMNS})`)
  const storageDir = await tempDir('sluice-sigterm-import-')
  // No grace at all: a direct COPY of this file can finish within a second on a quick machine.
  const first = await childGateway({ databaseUrl: db.url, storageDir, env: { SHUTDOWN_GRACE_SECONDS: '0' } })
  const id = await requestImport(first, 'people_interrupted')
  const loading = await waitFor('the import to be loading', async () => {
    const row = await taskRow(id)
    return row.state === 'running' && row.progress_bytes > 0 && row
  })
  first.kill('SIGTERM')
  assert.deepEqual(await first.waitForExit(15_000), { code: 0, signal: null }, first.output().stderr)
  t.diagnostic(`signalled once ${loading.progress_bytes} bytes had been read`)
  const handedBack = await taskRow(id)
  assert.equal(handedBack.state, 'queued')
  assert.equal(handedBack.attempts, 0)
  await waitFor('the interrupted import\'s session to end', async () => {
    const [row] = await db.sql`select count(*)::int as n from pg_stat_activity where application_name = ${`sluice task ${id}`}`
    return row!.n === 0
  })
  assert.deepEqual([...await db.sql`select count(*)::int as n from people_interrupted`], [{ n: 0 }])

  const second = await childGateway({ databaseUrl: db.url, storageDir })
  const done = await waitFor('the second gateway to finish the import', async () => {
    const row = await taskRow(id)
    return ['succeeded', 'failed'].includes(row.state) && row
  }, 90_000)
  assert.equal(done.state, 'succeeded', done.error ?? '')
  assert.equal(done.attempts, 1, 'the interrupted attempt did not count')
  assert.deepEqual([...await db.sql`select count(*)::int as n, count(distinct id)::int as keys from people_interrupted`], [{ n: PEOPLE_ROWS, keys: PEOPLE_ROWS }])
  second.kill('SIGTERM')
  assert.equal((await second.waitForExit()).code, 0)
})

test('SIGTERM within the grace period: the running task finishes before the process exits', { timeout: 60_000 }, async (t) => {
  const storageDir = await tempDir('sluice-sigterm-grace-')
  const gateway = await childGateway({ databaseUrl: db.url, storageDir, env: { SHUTDOWN_GRACE_SECONDS: '30' } })
  const id = await requestExport(gateway, 'slow_export')
  await waitFor('the export to run', async () => {
    const row = await taskRow(id)
    return row.state === 'running' && row.progress_rows > 0
  })
  gateway.kill('SIGTERM')
  const signalled = Date.now()
  const exit = await gateway.waitForExit(40_000)
  t.diagnostic(`exited ${Date.now() - signalled} ms after SIGTERM (grace 30 s)`)
  assert.deepEqual(exit, { code: 0, signal: null }, gateway.output().stderr)
  const row = await taskRow(id)
  assert.equal(row.state, 'succeeded', row.error ?? '')
  assert.equal(row.attempts, 1)
  assert.equal(row.progress_rows, SLOW_EXPORT_ROWS)
  const [finished] = await db.sql`select result_key, extract(epoch from finished_at)::float8 * 1000 as at from sluice.tasks where id = ${id}`
  assert.ok(finished!.at < Date.now(), 'it ended before the process exited')
  assert.equal((await filesUnder(path.join(storageDir, 'exports')))[0], path.join(storageDir, finished!.result_key))
})

test('SIGTERM with the embedded PostgreSQL: the server is shut down cleanly with the gateway', { timeout: 120_000 }, async (t) => {
  const storageDir = await tempDir('sluice-embedded-')
  const started = Date.now()
  const gateway = await childGateway({ storageDir, startTimeoutMs: 90_000 })
  t.diagnostic(`initdb and start took ${Date.now() - started} ms`)
  assert.equal((await fetch(`${gateway.url}/healthz`)).status, 200)
  const pidFile = path.join(storageDir, 'postgres', 'postmaster.pid')
  const postmaster = Number((await readFile(pidFile, 'utf8')).split('\n')[0])
  assert.ok(isAlive(postmaster))

  gateway.kill('SIGTERM')
  const exit = await gateway.waitForExit(40_000)
  assert.deepEqual(exit, { code: 0, signal: null }, gateway.output().stderr)
  assert.equal(isAlive(postmaster), false, 'the server process is gone')
  await assert.rejects(readFile(pidFile), { code: 'ENOENT' }, 'postmaster.pid is removed')
  const log = await readFile(path.join(storageDir, 'postgres.log'), 'utf8')
  assert.match(log, /received fast shutdown request/)
  assert.match(log, /database system is shut down/)
})

test('kill -9 of a gateway with the embedded PostgreSQL: the next start adopts the server left running, and stops it on SIGTERM', { timeout: 120_000 }, async () => {
  const storageDir = await tempDir('sluice-embedded-adopt-')
  const first = await childGateway({ storageDir, startTimeoutMs: 90_000 })
  const pidFile = path.join(storageDir, 'postgres', 'postmaster.pid')
  const postmaster = Number((await readFile(pidFile, 'utf8')).split('\n')[0])
  assert.equal((await fetch(`${first.url}/healthz`)).status, 200)
  first.kill('SIGKILL')
  await first.waitForExit()
  assert.ok(isAlive(postmaster), 'the server outlives a gateway killed with -9 (its own process group)')

  const second = await childGateway({ storageDir, startTimeoutMs: 60_000 })
  assert.match(second.output().stdout, new RegExp(`adopting the embedded PostgreSQL already running \\(pid ${postmaster},`))
  assert.equal((await fetch(`${second.url}/healthz`)).status, 200)
  second.kill('SIGTERM')
  assert.deepEqual(await second.waitForExit(40_000), { code: 0, signal: null }, second.output().stderr)
  await waitFor('the adopted server to exit', async () => !isAlive(postmaster), 10_000)
  await assert.rejects(readFile(pidFile), { code: 'ENOENT' })
  assert.match(await readFile(path.join(storageDir, 'postgres.log'), 'utf8'), /database system is shut down/)
})

test('the database goes away under a running export and comes back: the gateway stays up and the task ends', { timeout: 150_000 }, async (t) => {
  const { server, sql, gateway, id } = await slowExportRunning()
  await sql.unsafe(`create view quick_export as select g as n from generate_series(1, 10) g`)

  await server.stop()
  const down = Date.now()
  for (let i = 0; i < 5; i++) {
    const health = await fetch(`${gateway.url}/healthz`)
    assert.equal(health.status, 503, 'healthz says the database is unreachable')
    assert.equal(((await health.json()) as { ok: boolean }).ok, false)
    await new Promise((r) => setTimeout(r, 1_000))
  }
  assert.equal(gateway.exitStatus(), null, `the gateway is still up: ${gateway.output().stderr}`)

  await server.start()
  t.diagnostic(`the database was away for ${Date.now() - down} ms`)
  const back = Date.now()
  await waitFor('healthz to answer 200 again', async () => (await fetch(`${gateway.url}/healthz`)).status === 200, 20_000)
  t.diagnostic(`healthz answered 200 ${Date.now() - back} ms after the database was back`)
  const ended = await waitFor('the task to end', async () => {
    const [row] = await sql`select state, attempts, error_code, error from sluice.tasks where id = ${id}`
    return row && ['succeeded', 'failed'].includes(row.state) && row
  }, 60_000)
  t.diagnostic(`the task ended ${ended.state} after ${ended.attempts} attempts, ${Date.now() - back} ms after the database was back`)
  if (ended.state === 'failed') assert.ok(ended.error && ended.error.length > 10, `a failure says why: ${ended.error}`)
  else assert.ok(ended.attempts >= 2, 'the attempt cut short by the outage was taken up again')
  assert.deepEqual([...await sql`select id from sluice.tasks where state = 'running'`], [], 'no task stays running')
  if (ended.state === 'succeeded') {
    const download = await gateway.fetch(`/api/tasks/${id}/download`)
    assert.equal(download.status, 200)
    assert.equal((await download.text()).trimEnd().split('\n').length, OUTAGE_EXPORT_ROWS + 1)
  }

  // LISTEN came back with the database. Asserted on the server's own view of the
  // connection rather than on how fast a new task is claimed: the 2-second poll
  // claims it too, so on a busy machine a timing says little either way.
  const listener = await waitFor('the dispatcher to LISTEN again', async () => {
    const rows = await sql`select pid, query from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and query ilike 'listen %'`
    return rows.length > 0 && rows
  }, 20_000)
  assert.match(listener[0]!.query, /^listen "sluice_tasks"$/i)
  for (let i = 0; i < 3; i++) {
    const again = await requestExport(gateway, 'quick_export')
    const requested = Date.now()
    await waitFor('the new export to finish', async () => (await sql`select 1 from sluice.tasks where id = ${again} and state = 'succeeded'`).length === 1)
    t.diagnostic(`a new export finished ${Date.now() - requested} ms after it was requested`)
  }

  assert.equal(gateway.exitStatus(), null)
  // A rejection nobody handled would have ended the process; make sure none was even printed.
  assert.doesNotMatch(gateway.output().stderr, /unhandled|uncaught|^\s+at /im)
  gateway.kill('SIGTERM')
  assert.deepEqual(await gateway.waitForExit(20_000), { code: 0, signal: null }, gateway.output().stderr)
})

test('the database goes away under a running import and comes back: nothing half-loaded, then exactly one load', { timeout: 150_000 }, async (t) => {
  const server = await startRestartablePostgres()
  const { sql } = server
  await sql.unsafe(`create table people (${PEOPLE_COLUMNS})`)
  const gateway = await childGateway({ databaseUrl: server.url, env: { TASK_LEASE_SECONDS: '3' } })
  cleanups.push(() => rm(gateway.storageDir, { recursive: true, force: true }))
  const id = await requestImport(gateway, 'people')
  await waitFor('the import to be loading', async () => {
    const [row] = await sql`select progress_bytes::int as bytes from sluice.tasks where id = ${id} and state = 'running'`
    return row && row.bytes > 0
  })

  await server.stop()
  await new Promise((r) => setTimeout(r, 4_000)) // past the 3-second lease
  assert.equal(gateway.exitStatus(), null, `the gateway is still up: ${gateway.output().stderr}`)
  assert.equal((await fetch(`${gateway.url}/healthz`)).status, 503)
  await server.start()
  const back = Date.now()

  const ended = await waitFor('the import to end', async () => {
    const [row] = await sql`select state, attempts, error from sluice.tasks where id = ${id}`
    return row && ['succeeded', 'failed'].includes(row.state) && row
  }, 60_000)
  t.diagnostic(`the import ended ${ended.state} after ${ended.attempts} attempts, ${Date.now() - back} ms after the database was back`)
  assert.equal(ended.state, 'succeeded', ended.error)
  assert.equal(ended.attempts, 2)
  assert.deepEqual([...await sql`select count(*)::int as n, count(distinct id)::int as keys from people`], [{ n: PEOPLE_ROWS, keys: PEOPLE_ROWS }])
  assert.deepEqual([...await sql`select id from sluice.tasks where state = 'running'`], [])
  assert.equal(gateway.exitStatus(), null)
  assert.doesNotMatch(gateway.output().stderr, /unhandled|uncaught|^\s+at /im)
  gateway.kill('SIGTERM')
  assert.deepEqual(await gateway.waitForExit(20_000), { code: 0, signal: null }, gateway.output().stderr)
})

/** Its own restartable server, a child gateway (lease 3 s, and `env`) and an export already running on it. */
async function slowExportRunning(env: Record<string, string> = {}) {
  const server = await startRestartablePostgres()
  const { sql } = server
  await sql.unsafe(`create view slow_export as select g as n, repeat('x', 100) || pg_sleep(0.0015)::text as filler from generate_series(1, ${OUTAGE_EXPORT_ROWS}) g`)
  const gateway = await childGateway({ databaseUrl: server.url, env: { TASK_LEASE_SECONDS: '3', ...env } })
  cleanups.push(() => rm(gateway.storageDir, { recursive: true, force: true }))
  const id = await requestExport(gateway, 'slow_export')
  await waitFor('the export to run', async () => {
    const [row] = await sql`select progress_rows::int as rows from sluice.tasks where id = ${id} and state = 'running'`
    return row && row.rows > 0
  })
  return { server, sql, gateway, id }
}

test('SIGTERM while the database is away: the gateway still exits within the grace period and a few seconds', { timeout: 90_000 }, async (t) => {
  const { server, sql, gateway, id } = await slowExportRunning({ SHUTDOWN_GRACE_SECONDS: '2' })
  await server.stop()
  gateway.kill('SIGTERM')
  const signalled = Date.now()
  const exit = await gateway.waitForExit(30_000)
  const took = Date.now() - signalled
  t.diagnostic(`exited ${took} ms after SIGTERM (grace 2 s), code ${exit.code}; stdout: ${gateway.output().stdout.split('\n').filter((l) => /SIGTERM|stop|release|hand/i.test(l)).join(' | ')}`)
  assert.ok(took < 2_000 + 8_000, `exited in ${took} ms`)
  assert.doesNotMatch(gateway.output().stderr, /unhandled|uncaught|^\s+at /im)

  await server.start()
  const row = await waitFor('the task row to be readable', async () => {
    const [found] = await sql`select state, attempts from sluice.tasks where id = ${id}`.catch(() => [])
    return found
  })
  t.diagnostic(`after the restart the task is ${row.state}, attempts ${row.attempts}`)
  assert.ok(['running', 'queued'].includes(row.state), 'left for a gateway to take up again, not failed')
})

test('SIGTERM while the database hangs (its processes stopped): the gateway still exits in bounded time', { timeout: 90_000 }, async (t) => {
  const { server, sql, gateway, id } = await slowExportRunning({ SHUTDOWN_GRACE_SECONDS: '2' })
  await server.freeze()
  gateway.kill('SIGTERM')
  const signalled = Date.now()
  const exit = await gateway.waitForExit(40_000).catch((err: Error) => err)
  const took = Date.now() - signalled
  server.thaw()
  t.diagnostic(`after SIGTERM: ${exit instanceof Error ? 'still running' : `exited in ${took} ms, code ${exit.code}`}; stdout: ${gateway.output().stdout.split('\n').filter((l) => /SIGTERM|stop|release|hand/i.test(l)).join(' | ')}`)
  assert.ok(!(exit instanceof Error), 'the gateway exited')
  // The grace period, then at most a few seconds for each query on the way out (release, unlisten, closing the pool).
  assert.ok(took < 2_000 + 15_000, `exited in ${took} ms`)
  assert.equal(exit.code, 0)
  // Queries the dead gateway had sent to the frozen server run when it thaws: a heartbeat may
  // renew the lease once more, or the hand-back may land. Either way the task is taken up again.
  const [row] = await sql`select state, attempts, extract(epoch from lease_expires_at - now())::float8 as lease_left from sluice.tasks where id = ${id}`
  t.diagnostic(`after the thaw the task is ${row!.state}, attempts ${row!.attempts}, lease ${row!.lease_left} s`)
  if (row!.state === 'queued') assert.equal(row!.attempts, 0)
  else {
    assert.equal(row!.state, 'running')
    assert.ok(row!.lease_left <= 3, 'its lease lapses within one lease period')
  }
})

/** An embedded PostgreSQL of the test's own, which it may stop and start again on the same port. */
async function startRestartablePostgres() {
  const dataDir = path.join(await tempDir('sluice-restart-pg-'), 'postgres')
  let server = await startEmbeddedPostgres(dataDir)
  cleanups.push(() => server.stop())
  const { url } = server
  const port = Number(new URL(url).port)
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  cleanups.push(() => sql.end({ timeout: 1 }))
  const postmaster = async () => Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0])
  let frozen: number[] = []
  const thaw = () => {
    for (const pid of frozen.splice(0)) process.kill(pid, 'SIGCONT')
  }
  return {
    url,
    sql,
    stop: () => server.stop(),
    /**
     * SIGSTOP to the server and every backend (each runs in a session of its own):
     * connections stay open, nothing answers.
     */
    freeze: async () => {
      const main = await postmaster()
      process.kill(main, 'SIGSTOP') // first, so that it forks no new backend meanwhile
      const children = execFileSync('ps', ['-o', 'pid=', '--ppid', String(main)]).toString().split('\n').map(Number).filter((pid) => pid > 0)
      for (const pid of children) process.kill(pid, 'SIGSTOP')
      frozen = [main, ...children]
      cleanups.push(async () => thaw()) // a failed test must not leave a stopped server behind
    },
    thaw,
    start: async () => {
      server = await startEmbeddedPostgres(dataDir, () => {}, { port })
    },
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

async function requestExport(gateway: ChildGateway, dataset: string): Promise<string> {
  const res = await gateway.fetch(`/api/datasets/${dataset}/exports`, { method: 'POST' })
  const body = (await res.json()) as TaskJson
  assert.equal(res.status, 202, JSON.stringify(body))
  return body.id
}

async function requestExportInDatabase(dataset: string): Promise<string> {
  const [row] = await db.sql`insert into sluice.tasks (kind, dataset, params) values ('export', ${dataset}, '{"query": [], "gzip": false}'::jsonb) returning id`
  return row!.id as string
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true })
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name))
}

/** Writes a header and `count` generated lines (1-based) to `file`, streaming. */
async function writeLines(file: string, header: string, count: number, line: (i: number) => string) {
  const out = createWriteStream(file)
  out.write(`${header}\n`)
  const CHUNK = 10_000
  for (let start = 1; start <= count; start += CHUNK) {
    let text = ''
    for (let i = start; i < Math.min(start + CHUNK, count + 1); i++) text += `${line(i)}\n`
    if (!out.write(text)) await new Promise<void>((r) => out.once('drain', () => r()))
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())))
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex')
