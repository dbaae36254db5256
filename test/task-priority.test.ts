import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { after, before, test } from 'node:test'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { startTestGateway, waitForTask, type TestGateway } from './support/gateway.ts'

let db: TestDatabase
let gateway: TestGateway

before(async () => {
  db = await createTestDatabase()
  // About 3 s to export, in wide rows so that progress shows early (COPY sends 8 KB
  // packets): the task's worker thread is alive and busy while we look.
  await db.sql.unsafe(`create view slow_rows as select g as n, repeat('x', 200) || pg_sleep(0.003)::text as filler from generate_series(1, 1000) g`)
  gateway = await startTestGateway(db.url)
})

after(async () => {
  await gateway?.stop()
  await db?.drop()
})

/** The nice value of every thread of this process (the gateway runs in it), from /proc. */
function threadNiceValues(): Map<number, number> {
  const values = new Map<number, number>()
  for (const tid of readdirSync('/proc/self/task')) {
    // Field 19 (nice) counted after the ")" that closes the thread's name.
    const fields = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ')
    values.set(Number(tid), Number(fields[16]))
  }
  return values
}

test('task worker threads run at a lower CPU priority than the HTTP thread, so status polls stay fast under load', async () => {
  const res = await gateway.fetch('/api/datasets/slow_rows/exports', { method: 'POST' })
  assert.equal(res.status, 202)
  const { id } = (await res.json()) as { id: string }
  // Rows written: the worker runs the task's code (a thread only starts as 'running').
  const running = await waitForTask(gateway, id, (t) => t.progress.rows > 0 || t.state !== 'running' && t.state !== 'queued')
  assert.equal(running.state, 'running', 'the export should still be running while the threads are inspected')

  const nice = threadNiceValues()
  assert.equal(nice.get(process.pid), 0, 'the event loop thread keeps the normal priority')
  const lowered = [...nice.values()].filter((value) => value === 10)
  assert.ok(lowered.length >= 1, `a worker thread runs at nice 10; threads: ${JSON.stringify([...nice])}`)

  const done = await waitForTask(gateway, id)
  assert.equal(done.state, 'succeeded', done.error ?? '')
  assert.equal(done.progress.rows, 1000)
})
