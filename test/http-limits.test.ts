import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { startTestGateway, type TestGateway } from './support/gateway.ts'

// Bodies that are not uploads are forms and JSON: capped at 1 MiB before anyone reads them.

let db: TestDatabase
let gateway: TestGateway

before(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe('create table notes (id int primary key, body text)')
  gateway = await startTestGateway(db.url)
})

after(async () => {
  await gateway?.stop()
  await db?.drop()
})

/** A body of `bytes` sent in chunks with no Content-Length, as a client that streams would. */
function streamedBody(bytes: number): ReadableStream<Uint8Array> {
  let sent = 0
  const chunk = new TextEncoder().encode('limit=1&pad=' + 'x'.repeat(64 * 1024 - 12))
  return new ReadableStream({
    pull(controller) {
      if (sent >= bytes) return controller.close()
      controller.enqueue(chunk)
      sent += chunk.length
    },
  })
}

test('a form or JSON body over 1 MiB is refused with 413, whether or not it says its length', async () => {
  const big = 'limit=1&pad=' + 'x'.repeat(2 * 1024 * 1024)
  // Connection: close, because the server answers before reading the body and then drops
  // the connection; a client that reused it would see "other side closed" on its next request.
  const declared = await gateway.fetch('/datasets/notes/exports', { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded', Connection: 'close' }, body: big })
  assert.equal(declared.status, 413)
  assert.match(await declared.text(), /over 1024 KiB; only uploads may be larger/)

  const streamed = await gateway.fetch('/api/tokens', {
    method: 'POST', headers: { 'Content-Type': 'application/json', Connection: 'close' }, body: streamedBody(3 * 1024 * 1024), duplex: 'half',
  } as RequestInit)
  assert.equal(streamed.status, 413)
  assert.equal(((await streamed.json()) as { code: string }).code, 'BODY_TOO_LARGE')

  const [tasks] = await db.sql`select count(*)::int as n from sluice.tasks`
  assert.equal(tasks!.n, 0)
  const [tokens] = await db.sql`select count(*)::int as n from sluice.tokens`
  assert.equal(tokens!.n, 1, 'only the admin token the test gateway registered')

  // Uploads are not held to it: they stream to disk under MAX_UPLOAD_BYTES.
  const rows = Array.from({ length: 60_000 }, (_, i) => `${i},${'y'.repeat(20)}`).join('\n')
  const upload = await gateway.fetch('/api/datasets/notes/imports', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: `id,body\n${rows}\n` })
  assert.equal(upload.status, 202, 'a 1.7 MB upload is accepted')
})
