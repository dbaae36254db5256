import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { openDatabase } from '../src/db/client.ts'
import { startDispatcher } from '../src/tasks/dispatcher.ts'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { startTestGateway } from './support/gateway.ts'
import { waitFor } from './support/wait.ts'

let db: TestDatabase

before(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table items (id int primary key, label text);
    insert into items select g, 'item ' || g from generate_series(1, 1000) g;
    -- about 4 s to export: long enough to kill a gateway in the middle. Wide rows,
    -- because Postgres sends COPY output in 8 KB packets: progress shows early.
    create view slow_items as select g as n, repeat('x', 100) || pg_sleep(0.0015)::text as filler from generate_series(1, 2000) g;
    -- about 0.3 s: several of these keep two dispatchers busy at once
    create view brief_items as select g as n, pg_sleep(0.003)::text as slept from generate_series(1, 100) g;
  `)
})

after(async () => {
  await db?.drop()
})

async function enqueueExport(dataset: string, count = 1): Promise<string[]> {
  const rows = await db.sql`
    insert into sluice.tasks (kind, dataset, params)
    select 'export', ${dataset}, '{"query": [], "gzip": false}'::jsonb from generate_series(1, ${count})
    returning id`
  return rows.map((r) => r.id as string)
}


const taskRow = async (id: string) => {
  const [row] = await db.sql`select state, attempts, locked_by, progress_rows::int, error, result_key from sluice.tasks where id = ${id}`
  return row!
}

test('a task held by a gateway killed with -9 is taken up again once its lease expires', async () => {
  const storageDir = await mkdtemp(path.join(os.tmpdir(), 'sluice-killed-'))
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: { ...process.env, DATABASE_URL: db.url, PORT: '0', STORAGE_DIR: storageDir, TASK_LEASE_SECONDS: '2' },
    stdio: 'ignore',
  })
  let second: Awaited<ReturnType<typeof startTestGateway>> | null = null
  try {
    const [id] = await enqueueExport('slow_items')
    const first = await waitFor('the first gateway to be exporting', async () => {
      const row = await taskRow(id!)
      return row.state === 'running' && row.progress_rows > 0 && String(row.locked_by).includes(`:${child.pid}:`) && row
    })
    assert.equal(first.attempts, 1)
    child.kill('SIGKILL')
    await new Promise((resolve) => child.once('exit', resolve))

    second = await startTestGateway(db.url, { TASK_LEASE_SECONDS: '2' })
    const done = await waitFor('the task to finish on the second gateway', async () => {
      const row = await taskRow(id!)
      return ['succeeded', 'failed'].includes(row.state) && row
    })
    assert.equal(done.state, 'succeeded', done.error)
    assert.equal(done.attempts, 2)
    assert.ok(String(done.locked_by).includes(`:${process.pid}:`), 'the surviving gateway finished it')
    assert.equal(done.progress_rows, 2000)
    const res = await second.fetch(`/api/tasks/${id}/download`)
    const lines = (await res.text()).trimEnd().split('\n')
    assert.equal(lines.length, 2001, 'the file is whole: header and every row')
  } finally {
    child.kill('SIGKILL')
    await second?.stop()
    await rm(storageDir, { recursive: true, force: true })
  }
})

test('two dispatchers on one database share the work and never run a task twice', async () => {
  const storageDir = await mkdtemp(path.join(os.tmpdir(), 'sluice-two-'))
  const pools = [openDatabase(db.url, { max: 3 }), openDatabase(db.url, { max: 3 })]
  const options = { databaseUrl: db.url, storageDir, schema: 'public', concurrency: 2, leaseSeconds: 5, pollSeconds: 2, fileRetentionHours: 1, statementTimeoutMs: 0, log: () => {} }
  const dispatchers = pools.map((sql) => startDispatcher({ ...options, sql }))
  try {
    const ids = await enqueueExport('brief_items', 16)
    const rows = await waitFor('every task to finish', async () => {
      const found = await db.sql`select state, attempts, locked_by, error from sluice.tasks where id = any(${ids}::uuid[])`
      return found.every((r) => ['succeeded', 'failed'].includes(r.state)) && found
    }, 60_000)
    assert.equal(rows.length, 16)
    assert.deepEqual(rows.filter((r) => r.state !== 'succeeded'), [])
    assert.ok(rows.every((r) => r.attempts === 1), 'each task was claimed exactly once')
    const holders = new Set(rows.map((r) => r.locked_by))
    assert.deepEqual(holders, new Set(dispatchers.map((d) => d.workerId)), 'both dispatchers took part')
  } finally {
    await Promise.all(dispatchers.map((d) => d.stop(2_000)))
    await Promise.all(pools.map((sql) => sql.end()))
    await rm(storageDir, { recursive: true, force: true })
  }
})

test('an idle dispatcher is woken by NOTIFY, not by its poll', async (t) => {
  // With the poll a minute apart, a claim within seconds can only come from NOTIFY
  // (a tight bound on a 2-second poll would fail whenever the machine is busy).
  const gateway = await startTestGateway(db.url, { TASK_POLL_SECONDS: '60' })
  try {
    await new Promise((r) => setTimeout(r, 500))
    for (let i = 0; i < 4; i++) {
      const started = Date.now()
      const [id] = await enqueueExport('items')
      await waitFor('the task to be claimed', async () => (await taskRow(id!)).attempts === 1, 15_000)
      const waited = Date.now() - started
      t.diagnostic(`claimed after ${waited} ms`)
      assert.ok(waited < 10_000, `claimed after ${waited} ms`)
      await waitFor('the task to finish', async () => (await taskRow(id!)).state === 'succeeded')
    }
  } finally {
    await gateway.stop()
  }
})

test('on stop, a task still running after the grace period goes back to the queue', async () => {
  const gateway = await startTestGateway(db.url)
  const [id] = await enqueueExport('slow_items')
  await waitFor('the export to run', async () => (await taskRow(id!)).progress_rows > 0)
  await gateway.stop() // 2 s grace, the export needs about 4 s
  const row = await taskRow(id!)
  assert.equal(row.state, 'queued')
  assert.equal(row.attempts, 0, 'an attempt cut short by a shutdown does not count')
  await db.sql`delete from sluice.tasks where id = ${id!}`
})

test('revoking a token cancels its queued tasks at once and stops its running ones', async () => {
  const gateway = await startTestGateway(db.url, { TASK_CONCURRENCY: '1' })
  try {
    const created = await gateway.fetch('/api/tokens', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"name":"leaving","role":"user"}' })
    const token = (await created.json()) as { id: string; token: string }
    const ids: string[] = []
    for (let i = 0; i < 3; i++) {
      const res = await gateway.fetch('/api/datasets/slow_items/exports', { method: 'POST', headers: { Authorization: `Bearer ${token.token}` } })
      assert.equal(res.status, 202)
      ids.push(((await res.json()) as { id: string }).id)
    }
    const running = await waitFor('one export to run', async () => {
      for (const id of ids) if ((await taskRow(id)).state === 'running') return id
      return null
    })
    assert.equal((await gateway.fetch(`/api/tokens/${token.id}`, { method: 'DELETE' })).status, 200)

    const taskJson = async (id: string) => (await (await gateway.fetch(`/api/tasks/${id}`)).json()) as { state: string; cancelReason: string | null; cancelRequested: boolean }
    for (const id of ids.filter((id) => id !== running)) {
      const task = await taskJson(id)
      assert.equal(task.state, 'cancelled', 'a queued task ends with the revoke')
      assert.match(task.cancelReason ?? '', /token .* was revoked/)
    }
    const stopped = await waitFor('the running export to stop', async () => {
      const task = await taskJson(running)
      return task.state === 'cancelled' && task
    }, 10_000)
    assert.match(stopped.cancelReason ?? '', /revoked/)
  } finally {
    await gateway.stop()
  }
})

test('cancelling a finished task is 409 TASK_FINISHED and leaves it as it ended', async () => {
  const gateway = await startTestGateway(db.url)
  try {
    const res = await gateway.fetch('/api/datasets/items/exports', { method: 'POST' })
    const { id } = (await res.json()) as { id: string }
    await waitFor('the export to finish', async () => (await taskRow(id)).state === 'succeeded')
    const cancel = await gateway.fetch(`/api/tasks/${id}/cancel`, { method: 'POST' })
    assert.equal(cancel.status, 409)
    assert.equal(((await cancel.json()) as { code: string }).code, 'TASK_FINISHED')
    const [row] = await db.sql`select state, cancel_requested_at from sluice.tasks where id = ${id}`
    assert.equal(row!.state, 'succeeded')
    assert.equal(row!.cancel_requested_at, null)
    const task = (await (await gateway.fetch(`/api/tasks/${id}`)).json()) as { cancelRequested: boolean }
    assert.equal(task.cancelRequested, false)
  } finally {
    await gateway.stop()
  }
})

test('an id of uuid length that is no uuid (36 dashes) is 404 everywhere an id is taken, before PostgreSQL', async () => {
  const gateway = await startTestGateway(db.url)
  try {
    for (const bad of ['-'.repeat(36), '0123456789abcdef0123456789abcdef----']) {
      for (const [method, url] of [
        ['GET', `/api/tasks/${bad}`], ['POST', `/api/tasks/${bad}/cancel`], ['POST', `/api/tasks/${bad}/retry`], ['GET', `/api/tasks/${bad}/download`],
        ['GET', `/api/uploads/${bad}`], ['POST', `/api/uploads/${bad}/imports`], ['DELETE', `/api/tokens/${bad}`],
        ['GET', `/tasks/${bad}`], ['GET', `/tasks/${bad}/status`], ['POST', `/tasks/${bad}/cancel`], ['POST', `/tasks/${bad}/retry`],
        ['GET', `/uploads/${bad}`], ['POST', `/uploads/${bad}/imports`], ['POST', `/tokens/${bad}/revoke`], ['GET', `/files/${bad}?expires=1&signature=x`],
      ] as const) {
        const res = await gateway.fetch(url, { method })
        assert.ok(res.status === 404 || (url.startsWith('/files/') && res.status === 403), `${method} ${url}: ${res.status}`)
      }
    }
  } finally {
    await gateway.stop()
  }
})
