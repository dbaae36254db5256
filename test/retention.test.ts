import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { mkdir, mkdtemp, rm, stat, utimes, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import postgres from 'postgres'
import { sweepStorage } from '../src/retention/index.ts'
import { createStorage } from '../src/storage/index.ts'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { exportVia, startTestGateway, waitForTask, type TaskJson, type TestGateway } from './support/gateway.ts'
import { waitFor } from './support/wait.ts'

// Time is simulated the way it really passes for the sweep: expiry times and
// creation times are moved into the past in the database, modification times
// of files on disk with utimes. Everything else is the real gateway.

let db: TestDatabase
let gateway: TestGateway

before(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table things (id int primary key, label text not null);
    insert into things select g, 'thing ' || g from generate_series(1, 500) g;
  `)
  gateway = await startTestGateway(db.url, { FILE_RETENTION_HOURS: '2', RETENTION_SWEEP_SECONDS: '1' })
})

after(async () => {
  await gateway?.stop()
  await db?.drop()
})

type Task = TaskJson & { fileExpired: boolean; report: string | null; signedDownload: { url: string } | null }

const getTask = async (id: string) => (await (await gateway.fetch(`/api/tasks/${id}`)).json()) as Task
const keyOf = async (id: string) => (await db.sql<{ key: string | null }[]>`select result_key as key from sluice.tasks where id = ${id}`)[0]!.key
const exists = (file: string) => stat(file).then(() => true, () => false)
const hoursAgo = (hours: number) => new Date(Date.now() - hours * 3600_000)


async function uploadOnly(body: string): Promise<string> {
  const form = new FormData()
  form.set('file', new Blob([body], { type: 'text/csv' }), 'things.csv')
  const res = await gateway.fetch('/datasets/things/uploads', { method: 'POST', body: form })
  assert.equal(res.status, 303, await res.text())
  return res.headers.get('location')!.split('/').pop()!
}

async function uploadRow(id: string) {
  const [row] = await db.sql<{ key: string }[]>`select storage_key as key from sluice.uploads where id = ${id}`
  return row ?? null
}

describe('finished files expire', () => {
  test('an export past its retention is deleted by the periodic sweep; the task says so and the download answers 410', async () => {
    const task = await exportVia(gateway, 'things')
    assert.equal(task.state, 'succeeded')
    const signed = (await getTask(task.id)).signedDownload!.url
    const file = path.join(gateway.storageDir, (await keyOf(task.id))!)
    assert.ok(await exists(file))
    assert.equal((await gateway.fetch(`/api/tasks/${task.id}/download`)).status, 200)

    await db.sql`update sluice.tasks set result_expires_at = now() - interval '1 second' where id = ${task.id}`
    // No direct call: the gateway's own sweeper (every second here) must find it.
    await waitFor('the sweep to delete the export', async () => !(await exists(file)))

    const expired = await getTask(task.id)
    assert.equal(expired.state, 'succeeded')
    assert.equal(expired.fileExpired, true)
    assert.equal(expired.download, null)
    assert.equal(expired.signedDownload, null)
    assert.equal(expired.progress.rows, 500, 'the task keeps its other facts')
    const [row] = await db.sql`select result_key, result_expired_at from sluice.tasks where id = ${task.id}`
    assert.equal(row!.result_key, null)
    assert.ok(row!.result_expired_at instanceof Date)

    const download = await gateway.fetch(`/api/tasks/${task.id}/download`)
    assert.equal(download.status, 410)
    assert.equal(((await download.json()) as { code: string }).code, 'FILE_EXPIRED')
    assert.notEqual((await fetch(signed)).status, 200, 'a signed link handed out before does not outlive the file')
    const page = await (await gateway.fetch(`/tasks/${task.id}`)).text()
    assert.match(page, /expired/i)
  })

  test("an import's error report expires the same way", async () => {
    const res = await gateway.fetch('/api/datasets/things/imports?onError=skip', {
      method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: 'id,label\n1000,fine\nnot a number,bad\n',
    })
    assert.equal(res.status, 202)
    const task = (await waitForTask(gateway, ((await res.json()) as TaskJson).id)) as Task
    assert.ok(task.report)
    const file = path.join(gateway.storageDir, (await keyOf(task.id))!)
    assert.ok(await exists(file))

    await db.sql`update sluice.tasks set result_expires_at = now() - interval '1 second' where id = ${task.id}`
    // The gateway's own sweeper (every second here) may get there first: assert on the files, not the counts.
    assert.ok(await gateway.retention.sweep(), 'the sweep failed (SLUICE_TEST_LOG=1 shows why)')
    assert.equal(await exists(file), false)
    const expired = await getTask(task.id)
    assert.equal(expired.fileExpired, true)
    assert.equal(expired.report, null)
    assert.equal((await gateway.fetch(`/api/tasks/${task.id}/download`)).status, 410)
  })

  test('a file not yet due stays', async () => {
    const task = await exportVia(gateway, 'things', 'id=lt.10')
    const file = path.join(gateway.storageDir, (await keyOf(task.id))!)
    await gateway.retention.sweep()
    assert.ok(await exists(file))
    assert.equal((await getTask(task.id)).fileExpired, false)
    assert.equal((await gateway.fetch(`/api/tasks/${task.id}/download`)).status, 200)
  })
})

describe('uploads expire unless an import still needs them', () => {
  test('an old upload nobody imported is deleted with its row', async () => {
    const id = await uploadOnly('id,label\n2000,a\n')
    const { key } = (await uploadRow(id))!
    const file = path.join(gateway.storageDir, key)
    assert.ok(await exists(file))

    await gateway.retention.sweep()
    assert.ok(await exists(file), 'a fresh upload stays')

    await db.sql`update sluice.uploads set created_at = ${hoursAgo(3)} where id = ${id}`
    await gateway.retention.sweep()
    assert.equal(await uploadRow(id), null)
    assert.equal(await exists(file), false)
    assert.equal((await gateway.fetch(`/uploads/${id}`)).status, 404)
  })

  test('an old upload stays while its import waits in the queue, and goes once the import has ended; a retry then says why it cannot run', async () => {
    const res = await gateway.fetch('/api/datasets/things/imports', {
      method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: 'id,label\n1,duplicate of an existing key\n',
    })
    const task = await waitForTask(gateway, ((await res.json()) as TaskJson).id)
    assert.equal(task.state, 'failed')
    const uploadId = (await db.sql<{ id: string }[]>`select params->>'uploadId' as id from sluice.tasks where id = ${task.id}`)[0]!.id
    const file = path.join(gateway.storageDir, (await uploadRow(uploadId))!.key)
    await db.sql`update sluice.uploads set created_at = ${hoursAgo(3)} where id = ${uploadId}`

    // As a retry waiting out its backoff would be: queued, not yet runnable.
    await db.sql`update sluice.tasks set state = 'queued', run_after = now() + interval '1 hour' where id = ${task.id}`
    await gateway.retention.sweep()
    assert.ok(await uploadRow(uploadId), 'the queued import still needs its upload')
    assert.ok(await exists(file))

    await db.sql`update sluice.tasks set state = 'failed', run_after = now() where id = ${task.id}`
    await gateway.retention.sweep()
    assert.equal(await uploadRow(uploadId), null)
    assert.equal(await exists(file), false)

    const retry = await gateway.fetch(`/api/tasks/${task.id}/retry`, { method: 'POST' })
    assert.equal(retry.status, 410)
    assert.equal(((await retry.json()) as { code: string }).code, 'UPLOAD_EXPIRED')
  })
})

describe('files without a task are cleaned up', () => {
  async function plant(relative: string, ageHours: number): Promise<string> {
    const file = path.join(gateway.storageDir, relative)
    await mkdir(path.dirname(file), { recursive: true })
    await writeFile(file, 'left behind\n')
    const when = hoursAgo(ageHours)
    await utimes(file, when, when)
    return file
  }

  test('orphans older than an hour go, with their empty day directory; fresh ones, referenced ones and foreign files stay', async () => {
    const oldOrphan = await plant(`exports/2020-01-01/${randomUUID()}.csv.gz`, 2)
    const oldReport = await plant(`reports/2020-01-01/${randomUUID()}.csv`, 30)
    const freshOrphan = await plant(`uploads/${new Date().toISOString().slice(0, 10)}/${randomUUID()}.csv`, 0)
    const foreign = await plant('exports/2020-01-02/README.txt', 100)

    const task = await exportVia(gateway, 'things', 'id=lt.5')
    const referenced = path.join(gateway.storageDir, (await keyOf(task.id))!)
    const old = hoursAgo(5)
    await utimes(referenced, old, old)

    assert.ok(await gateway.retention.sweep(), 'the sweep failed (SLUICE_TEST_LOG=1 shows why)')
    assert.equal(await exists(oldOrphan), false)
    assert.equal(await exists(oldReport), false)
    assert.equal(await exists(path.dirname(oldOrphan)), false, 'an emptied past day directory is removed')
    assert.ok(await exists(freshOrphan), 'a file written within the hour may be about to be recorded')
    assert.ok(await exists(foreign), 'a name the gateway never makes is not touched')
    assert.ok(await exists(referenced), 'a file a task refers to is never an orphan, however old')
    assert.equal((await gateway.fetch(`/api/tasks/${task.id}/download`)).status, 200)
  })

  test('temp files of writers that died go after six hours; ones being written stay', async () => {
    const stale = await plant(`tmp/${randomUUID()}.part`, 7)
    const live = await plant(`tmp/${randomUUID()}.part`, 1)
    assert.ok(await gateway.retention.sweep(), 'the sweep failed (SLUICE_TEST_LOG=1 shows why)')
    assert.equal(await exists(stale), false)
    assert.ok(await exists(live))
  })
})

test('two gateways sweeping at once delete each expired file once and agree on the count', async () => {
  // A database and storage of its own: the gateway above sweeps its database every second.
  const other = await createTestDatabase()
  const storage = createStorage(await mkdtemp(path.join(os.tmpdir(), 'sluice-test-sweep-')))
  await storage.prepare()
  const [a, b] = [postgres(other.url, { max: 2, onnotice: () => {} }), postgres(other.url, { max: 2, onnotice: () => {} })]
  try {
    const keys: string[] = []
    for (let i = 0; i < 40; i++) {
      const key = storage.newKey('exports', '.csv')
      await mkdir(path.dirname(storage.pathOf(key)), { recursive: true })
      await writeFile(storage.pathOf(key), 'id\n1\n')
      keys.push(key)
    }
    for (const key of keys) {
      await other.sql`
        insert into sluice.tasks (kind, dataset, params, state, max_attempts, result_key, result_name, result_size, result_expires_at, finished_at)
        values ('export', 'things', '{}', 'succeeded', 1, ${key}, 'x.csv', 5, now() - interval '1 minute', now())`
    }
    // And orphans, for both sweepers to find at once.
    const orphans = Array.from({ length: 10 }, () => storage.pathOf(storage.newKey('reports', '.csv')))
    await mkdir(path.dirname(orphans[0]!), { recursive: true })
    for (const file of orphans) {
      await writeFile(file, 'x\n')
      await utimes(file, hoursAgo(2), hoursAgo(2))
    }
    const settings = { retentionHours: 2, orphanGraceMs: 3600_000, staleTempMs: 6 * 3600_000 }
    const [first, second] = await Promise.all([sweepStorage(a, storage, settings), sweepStorage(b, storage, settings)])
    assert.equal(first.expiredResults + second.expiredResults, 40, 'each expired task is claimed by exactly one sweeper')
    const [left] = await other.sql`select count(*)::int as n from sluice.tasks where result_key is not null or result_expired_at is null`
    assert.equal(left!.n, 0)
    for (const key of keys) assert.equal(await exists(storage.pathOf(key)), false, `${key} is still on disk`)
    for (const file of orphans) assert.equal(await exists(file), false, `${file} is still on disk`)
    assert.ok(first.orphanFiles + second.orphanFiles >= 10)
  } finally {
    await Promise.all([a.end(), b.end()])
    await rm(storage.root, { recursive: true, force: true })
    await other.drop()
  }
})

test('while a task runs, nothing written since it started counts as an orphan (an import writes its report before it commits)', async () => {
  const planted = path.join(gateway.storageDir, `reports/2020-01-03/${randomUUID()}.csv`)
  await mkdir(path.dirname(planted), { recursive: true })
  await writeFile(planted, 'line,error\n')
  await utimes(planted, hoursAgo(2), hoursAgo(2))
  // As a long import holds it: running, started three hours ago, its lease kept fresh.
  const [task] = await db.sql<{ id: string }[]>`
    insert into sluice.tasks (kind, dataset, params, state, attempts, max_attempts, run_id, locked_by, lease_expires_at, started_at)
    values ('import', 'things', '{}', 'running', 1, 1, gen_random_uuid(), 'elsewhere', now() + interval '1 hour', now() - interval '3 hours')
    returning id`
  try {
    await gateway.retention.sweep()
    assert.ok(await exists(planted), 'a file the running task may yet record is kept')
  } finally {
    await db.sql`update sluice.tasks set state = 'failed', finished_at = now() where id = ${task!.id}`
  }
  await gateway.retention.sweep()
  assert.equal(await exists(planted), false, 'once no task is running, it is an orphan')
})
