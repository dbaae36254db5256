// Stored files are other people's data: 0600 files in 0700 folders (issue 11, item 13).
import assert from 'node:assert/strict'
import { readdir, stat } from 'node:fs/promises'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { exportVia, startTestGateway, waitForTask, type TaskJson, type TestGateway } from './support/gateway.ts'

let db: TestDatabase
let gateway: TestGateway

before(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create table items (id int primary key, name text not null); insert into items values (1, 'one')`)
  gateway = await startTestGateway(db.url)
})

after(async () => {
  await gateway?.stop()
  await db?.drop()
})

async function walk(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true })
  const nested = await Promise.all(entries.map((e) => (e.isDirectory() ? walk(path.join(dir, e.name)).then((inner) => [path.join(dir, e.name) + '/', ...inner]) : [path.join(dir, e.name)])))
  return nested.flat()
}

test('uploads, exports and error reports are readable by the gateway only', async () => {
  assert.equal((await exportVia(gateway, 'items')).state, 'succeeded')
  const res = await gateway.fetch('/api/datasets/items/imports?onError=skip', { method: 'POST', body: 'id,name\n2,two\nx,bad\n', headers: { 'Content-Type': 'text/csv' } })
  const task = await waitForTask(gateway, ((await res.json()) as TaskJson).id)
  assert.equal(task.state, 'succeeded')

  const paths = (await walk(gateway.storageDir)).filter((p) => !p.includes(`${path.sep}postgres`))
  const files = paths.filter((p) => !p.endsWith('/'))
  for (const area of ['exports', 'uploads', 'reports']) assert.ok(files.some((f) => f.includes(`${path.sep}${area}${path.sep}`)), `a file under ${area}/`)
  for (const p of paths) {
    const mode = (await stat(p)).mode & 0o777
    assert.equal(mode, p.endsWith('/') ? 0o700 : 0o600, `${path.relative(gateway.storageDir, p)} is ${mode.toString(8)}`)
  }
  assert.equal((await stat(gateway.storageDir)).mode & 0o066, 0, 'nobody else may list or write the storage root')
})
