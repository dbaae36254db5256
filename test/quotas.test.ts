import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { gzipSync } from 'node:zlib'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { newUserToken, startTestGateway, waitForTask, type TaskJson, type TestGateway } from './support/gateway.ts'

const QUOTA = 1024 * 1024 // TOKEN_MAX_STORED_BYTES for this file: 1 MiB

let db: TestDatabase
let gateway: TestGateway

before(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table items (id int primary key, label text);
    -- about 20 s to export: keeps a task active while the test counts
    create view slow_items as select g as n, repeat('x', 100) || pg_sleep(0.01)::text as filler from generate_series(1, 2000) g;
    -- about 1.2 MB as CSV: one export of it fills a token's storage quota
    create view big_rows as select g as n, repeat('y', 1000) as filler from generate_series(1, 1200) g;
  `)
  gateway = await startTestGateway(db.url, { TOKEN_MAX_ACTIVE_TASKS: '2', TOKEN_MAX_STORED_BYTES: String(QUOTA) })
})

after(async () => {
  await gateway?.stop()
  await db?.drop()
})

const as = (token: string, init: RequestInit = {}): RequestInit => ({ ...init, headers: { ...(init.headers as Record<string, string>), Authorization: `Bearer ${token}` } })
const csvOf = (bytes: number) => `id,label\n${'1,' + 'z'.repeat(Math.max(1, bytes - 12))}\n`

async function upload(token: string, body: RequestInit['body'], contentType = 'text/csv', extra: RequestInit = {}): Promise<Response> {
  return gateway.fetch('/api/datasets/items/uploads', as(token, { method: 'POST', headers: { 'Content-Type': contentType }, body, ...extra }))
}

const storedUploadsOf = async (token: string) => {
  const [row] = await db.sql<{ n: number; bytes: number }[]>`
    select count(*)::int as n, coalesce(sum(u.size), 0)::int as bytes from sluice.uploads u
    join sluice.tokens t on t.id = u.owner_id where t.token_hash = encode(sha256(convert_to(${token}, 'UTF8')), 'hex')`
  return row!
}

test('a token may have TOKEN_MAX_ACTIVE_TASKS tasks queued or running; concurrent requests cannot get past it', async () => {
  const token = await newUserToken(gateway, 'busy script')
  const answers = await Promise.all(Array.from({ length: 6 }, () => gateway.fetch('/api/datasets/slow_items/exports', as(token, { method: 'POST' }))))
  const accepted = answers.filter((res) => res.status === 202)
  const refused = answers.filter((res) => res.status === 429)
  assert.equal(accepted.length, 2, `statuses: ${answers.map((r) => r.status)}`)
  assert.equal(refused.length, 4)
  const body = (await refused[0]!.json()) as { code: string; error: string }
  assert.equal(body.code, 'TOO_MANY_TASKS')
  assert.match(body.error, /2 tasks queued or running.*TOKEN_MAX_ACTIVE_TASKS/)
  assert.match(refused[0]!.headers.get('Retry-After') ?? '', /^\d+$/)

  // An import is refused before its file streams, too.
  const importRes = await gateway.fetch('/api/datasets/items/imports', as(token, { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: 'id,label\n1,a\n' }))
  assert.equal(importRes.status, 429)
  assert.equal((await storedUploadsOf(token)).n, 0, 'nothing was stored')

  // The admin token is exempt: the operator can always work.
  const adminRes = await gateway.fetch('/api/datasets/items/exports', { method: 'POST' })
  assert.equal(adminRes.status, 202)

  // A cancelled task frees its slot.
  const ids = await Promise.all(accepted.map(async (res) => ((await res.json()) as TaskJson).id))
  assert.equal((await gateway.fetch(`/api/tasks/${ids[0]}/cancel`, as(token, { method: 'POST' }))).status, 202)
  await waitForTask(gateway, ids[0]!)
  const again = await gateway.fetch('/api/datasets/items/exports', as(token, { method: 'POST' }))
  assert.equal(again.status, 202)
  for (const id of [ids[1]!, ((await again.json()) as TaskJson).id]) await gateway.fetch(`/api/tasks/${id}/cancel`, { method: 'POST' })
})

test('a gzip upload counts inflated against TOKEN_MAX_STORED_BYTES: 413 naming the limit, nothing stored', async () => {
  const token = await newUserToken(gateway, 'gzip sender')
  const inflated = Buffer.from(csvOf(2 * QUOTA))
  const compressed = gzipSync(inflated)
  assert.ok(compressed.length < 10_000, 'small on the wire')
  const res = await upload(token, compressed, 'application/gzip')
  const body = (await res.json()) as { code: string; error: string }
  assert.equal(res.status, 413, JSON.stringify(body))
  assert.equal(body.code, 'STORAGE_QUOTA_EXCEEDED')
  assert.match(body.error, /TOKEN_MAX_STORED_BYTES/)
  assert.equal((await storedUploadsOf(token)).n, 0)
  // The admin token is exempt.
  assert.equal((await upload(gateway.adminToken, compressed, 'application/gzip')).status, 201)
})

test('concurrent uploads of one token cannot together overshoot its storage quota', async () => {
  const token = await newUserToken(gateway, 'parallel uploader')
  assert.equal((await upload(token, csvOf(600 * 1024))).status, 201)

  // A slow upload in flight holds what remains; a second one meanwhile finds no room.
  let finish!: () => void
  const held = new Promise<void>((resolve) => { finish = resolve })
  const slowBody = new ReadableStream<Uint8Array>({
    async start(controller) {
      controller.enqueue(Buffer.from(`id,label\n1,${'a'.repeat(100 * 1024)}\n`))
      await held
      controller.enqueue(Buffer.from(`2,${'b'.repeat(200 * 1024)}\n`))
      controller.close()
    },
  })
  const slow = upload(token, slowBody, 'text/csv', { duplex: 'half' } as RequestInit)
  await waitForReservation(token)
  const second = await upload(token, csvOf(300 * 1024))
  const secondBody = (await second.json()) as { code: string; error: string }
  assert.equal(second.status, 507, JSON.stringify(secondBody))
  assert.equal(secondBody.code, 'STORAGE_QUOTA_EXCEEDED')
  assert.match(secondBody.error, /TOKEN_MAX_STORED_BYTES/)
  finish()
  assert.equal((await slow).status, 201)
  const stored = await storedUploadsOf(token)
  assert.equal(stored.n, 2)
  assert.ok(stored.bytes <= QUOTA, `${stored.bytes} bytes stored`)
  const [left] = await db.sql`select count(*)::int as n from sluice.storage_reservations`
  assert.equal(left!.n, 0, 'the reservation became the upload')
})

test('result files count too: once a token holds its quota, new exports are refused with 507', async () => {
  const token = await newUserToken(gateway, 'exporter')
  const res = await gateway.fetch('/api/datasets/big_rows/exports', as(token, { method: 'POST' }))
  assert.equal(res.status, 202)
  const task = await waitForTask(gateway, ((await res.json()) as TaskJson).id)
  assert.equal(task.state, 'succeeded')
  assert.ok(task.file!.size > QUOTA)
  const refused = await gateway.fetch('/api/datasets/items/exports', as(token, { method: 'POST' }))
  assert.equal(refused.status, 507)
  assert.equal(((await refused.json()) as { code: string }).code, 'STORAGE_QUOTA_EXCEEDED')
  assert.equal((await upload(token, csvOf(100))).status, 507)
})

async function waitForReservation(token: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const [row] = await db.sql`
      select count(*)::int as n from sluice.storage_reservations r
      join sluice.tokens t on t.id = r.owner_id where t.token_hash = encode(sha256(convert_to(${token}, 'UTF8')), 'hex')`
    if (row!.n > 0) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error('the slow upload never reserved its space')
}
