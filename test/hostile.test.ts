import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { request } from 'node:http'
import { connect } from 'node:net'
import { Readable } from 'node:stream'
import { gzipSync } from 'node:zlib'
import { readdir, rm } from 'node:fs/promises'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { exportVia, startTestGateway, waitForTask, type TaskJson, type TestGateway } from './support/gateway.ts'

// Issue 5, hardening: hostile input gets a clear 4xx JSON answer (code + message), and
// nothing is stored, queued or executed because of it.

let db: TestDatabase
let gateway: TestGateway

// Values a careless gateway would paste into SQL; here they are ordinary names.
const INJECTIONS = [`x'); drop table t;--`, `"x""`, `'; delete from people; --`, `x" or "1"="1`, `a\\'b`, `1 or 1=1`]

before(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create table people (id int primary key, name text not null, age int, note text)`)
  await db.sql.unsafe(`create table t (id int)`)
  await db.sql.unsafe(`insert into t values (1), (2)`)
  const names = [...INJECTIONS, 'alice', 'bob', 'carol']
  for (const [i, name] of names.entries()) {
    await db.sql`insert into people values (${i + 1}, ${name}, ${20 + i}, ${i % 2 ? 'odd' : null})`
  }
  gateway = await startTestGateway(db.url, { MAX_UPLOAD_BYTES: String(1024 * 1024) })
})

after(async () => {
  await gateway?.stop()
  await db?.drop()
})

type ErrorJson = { error: string; code: string }

/** The answer is a 4xx with a JSON body that has a code and a readable message. */
async function assertRefused(res: Response, status: number | RegExp, what: string): Promise<ErrorJson> {
  const text = await res.text()
  if (typeof status === 'number') assert.equal(res.status, status, `${what}: ${res.status} ${text}`)
  else assert.match(String(res.status), status, `${what}: ${res.status} ${text}`)
  assert.ok(res.status >= 400 && res.status < 500, `${what}: ${res.status}`)
  assert.match(res.headers.get('content-type') ?? '', /application\/json/, `${what}: ${text}`)
  const body = JSON.parse(text) as ErrorJson
  assert.match(body.code, /^[A-Z_]+$/, `${what}: ${text}`)
  assert.ok(body.error.length > 10, `${what}: ${text}`)
  return body
}

async function catalogSnapshot() {
  const [counts] = await db.sql<{ relations: number; publicTables: string[] }[]>`
    select (select count(*)::int from pg_class where relpersistence <> 't') as relations,
           (select array_agg(relname::text order by relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
             where n.nspname = 'public' and c.relkind = 'r') as "publicTables"`
  const [rows] = await db.sql<{ people: number; t: number }[]>`select (select count(*)::int from people) as people, (select count(*)::int from t) as t`
  return { ...counts!, ...rows! }
}

async function countRows(table: 'sluice.tasks' | 'sluice.uploads'): Promise<number> {
  const [row] = await db.sql.unsafe(`select count(*)::int as n from ${table}`)
  return row!.n as number
}

/** Every file under the gateway's storage areas, relative to STORAGE_DIR. */
async function storedFiles(...areas: string[]): Promise<string[]> {
  const found: string[] = []
  for (const area of areas) {
    const root = path.join(gateway.storageDir, area)
    if (!existsSync(root)) continue
    for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
      if (entry.isFile()) found.push(path.relative(gateway.storageDir, path.join(entry.parentPath ?? (entry as unknown as { path: string }).path, entry.name)))
    }
  }
  return found.sort()
}

/** Nothing new in the queue, the uploads table or storage (temp files are removed on failure a moment later). */
async function assertNothingStored(before: { tasks: number; uploads: number; files: string[] }, what: string) {
  assert.equal(await countRows('sluice.tasks'), before.tasks, `${what}: no task queued`)
  assert.equal(await countRows('sluice.uploads'), before.uploads, `${what}: no upload recorded`)
  let files: string[] = []
  for (let i = 0; i < 20; i++) {
    files = await storedFiles('uploads', 'tmp')
    if (files.length === before.files.length) break
    await new Promise((r) => setTimeout(r, 100))
  }
  assert.deepEqual(files, before.files, `${what}: no file left in storage/uploads or storage/tmp`)
}

async function stateOfStorage() {
  return { tasks: await countRows('sluice.tasks'), uploads: await countRows('sluice.uploads'), files: await storedFiles('uploads', 'tmp') }
}

function csvOf(rows: string[][]): string {
  return rows.map((r) => r.map((v) => `"${v.replaceAll('"', '""')}"`).join(',')).join('\n') + '\n'
}

/** A field as COPY ... (FORMAT csv) writes it: quoted only when it must be. */
function copyCsvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value
}

async function downloadText(task: TaskJson): Promise<string> {
  const res = await gateway.fetch(`/api/tasks/${task.id}/download`)
  assert.equal(res.status, 200)
  return res.text()
}

// ---------------------------------------------------------------------------
// 1. SQL injection
// ---------------------------------------------------------------------------

test('SQL injection through filters, select, order, limit, offset, options, the dataset name and headers is refused or taken literally', async () => {
  const catalogBefore = await catalogSnapshot()
  const storageBefore = await stateOfStorage()
  const q = (pairs: [string, string][]) => new URLSearchParams(pairs).toString()

  const refusedExports: [string, string][][] = [
    // column names
    [[`x'); drop table t;--`, 'eq.1']],
    [[`"x""`, 'eq.1']],
    [[`name" = name or "1`, 'eq.1']],
    [[`name;drop table t`, 'eq.1']],
    // operators
    [['name', `eq'); drop table t;--`]],
    [['name', `drop table t;--.x`]],
    [['name', `not.not.eq.x`]],
    [['name', `=.x`]],
    [['name', `eq`]],
    [['name', `in.(a,b);drop table t`]],
    [['name', `is.null; drop table t`]],
    [['name', `is.(select 1)`]],
    // values that do not fit the column's type
    [['age', `eq.1; drop table t;--`]],
    [['age', `eq.1 or 1=1`]],
    [['age', `in.(1,"2); drop table t;--")`]],
    [['age', `gt.(select max(id) from t)`]],
    [['name', `eq.\0`]],
    // patterns PostgreSQL would refuse only when the export runs
    [['name', `like.x\\`]],
    [['name', `ilike.*\\\\\\`]],
    [['name', `match.(`]],
    [['name', `imatch.[`]],
    // select
    [['select', `id,name); drop table t;--`]],
    [['select', `"id""`]],
    [['select', `*,(select 1)`]],
    [['select', `id,pg_sleep(5)`]],
    // order
    [['order', `id;drop table t`]],
    [['order', `id.desc;--`]],
    [['order', `"name"" desc"`]],
    [['order', `(select 1)`]],
    [['order', `id.desc.nullslast.drop`]],
    // limit and offset
    [['limit', `1;drop table t`]],
    [['limit', `-1`]],
    [['limit', `1 union select 1`]],
    [['offset', `1e3`]],
    [['offset', `99999999999999999999`]],
    // export options
    [['gzip', `true'--`]],
    [['gzip', 'true'], ['gzip', 'false']],
    [['limit', '1'], ['limit', '2']],
  ]
  for (const pairs of refusedExports) {
    const res = await gateway.fetch(`/api/datasets/people/exports?${q(pairs)}`, { method: 'POST' })
    const body = await assertRefused(res, 400, `export ${JSON.stringify(pairs)}`)
    assert.match(body.code, /^(BAD_FILTER|BAD_OPTION)$/, JSON.stringify(pairs))
  }

  // The dataset name in the path is only ever looked up, never pasted.
  for (const name of [`people; drop table t;--`, `people"; drop table t;--`, `people'`, `public.people`, `t where 1=1`, `pg_catalog.pg_class`, `../people`]) {
    const res = await gateway.fetch(`/api/datasets/${encodeURIComponent(name)}/exports`, { method: 'POST' })
    await assertRefused(res, 404, `export of dataset ${name}`)
    const imp = await gateway.fetch(`/api/datasets/${encodeURIComponent(name)}/imports`, { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: 'id,name\n99,x\n' })
    await assertRefused(imp, 404, `import into dataset ${name}`)
  }

  // Import options: every one is checked against the table (or a fixed list) before a byte is stored.
  const refusedImports: [string, string][][] = [
    [['columns', `id,name"); drop table t;--`]],
    [['columns', `id,"name"" "`]],
    [['mode', `insert; drop table t`]],
    [['mode', 'upsert'], ['key', `id); drop table t;--`]],
    [['mode', 'upsert'], ['key', `name`]],
    [['onError', `skip'--`]],
    [['dryRun', `true; drop table t`]],
    [['delimiter', `,;drop table t`]],
    [['quote', `"'`]],
    [['escape', `\\'`]],
    [['header', `true;--`]],
    [['encoding', `utf8'; drop table t;--`]],
    [['encoding', `../../../etc/passwd`]],
    [['delimiter', ';'], ['quote', ';']],
    [[`x'--`, '1']],
  ]
  for (const pairs of refusedImports) {
    const res = await gateway.fetch(`/api/datasets/people/imports?${q(pairs)}`, { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: 'id,name\n99,x\n' })
    const body = await assertRefused(res, 400, `import ${JSON.stringify(pairs)}`)
    assert.equal(body.code, 'BAD_OPTION', JSON.stringify(pairs))
  }

  // Headers: credentials and conditional headers are compared, never queried as text.
  const hostileHeaders: Record<string, string>[] = [
    { Authorization: `Bearer x' or '1'='1` },
    { Authorization: `Bearer ' or 1=1; drop table t;--` },
    { Authorization: `Basic ${Buffer.from(`admin' --:x`).toString('base64')}` },
    { Authorization: '', Cookie: `sluice_session=' or '1'='1` },
    { Authorization: '', Cookie: `sluice_session="; drop table t;--` },
  ]
  for (const headers of hostileHeaders) {
    const res = await gateway.fetch('/api/datasets', { headers })
    await assertRefused(res, 401, `headers ${JSON.stringify(headers)}`)
  }
  const anyHeaders = await gateway.fetch(`/api/datasets/people/exports`, {
    method: 'POST', headers: { 'X-CSRF-Token': `'; drop table t;--`, Origin: gateway.url, 'Accept-Language': `'; drop table t;--`, 'X-Forwarded-For': `1'); drop table t;--` },
  })
  assert.equal(anyHeaders.status, 202, 'headers the API does not read change nothing')
  await waitForTask(gateway, ((await anyHeaders.json()) as TaskJson).id)

  // Nothing from the refused requests was queued or stored; the catalog is as it was.
  const catalogAfter = await catalogSnapshot()
  assert.deepEqual(catalogAfter, catalogBefore)
  assert.deepEqual(catalogAfter.publicTables, ['people', 't'])
  assert.equal(catalogAfter.people, 9)
  assert.equal(catalogAfter.t, 2)
  await assertNothingStored({ ...storageBefore, tasks: storageBefore.tasks + 1 }, 'refused requests')
})

test('hostile strings as legitimate filter values match exactly the rows that hold them', async () => {
  for (const [i, value] of INJECTIONS.entries()) {
    const task = await exportVia(gateway, 'people', new URLSearchParams([['name', `eq.${value}`], ['select', 'id,name']]).toString())
    assert.equal(task.state, 'succeeded', JSON.stringify(task))
    assert.equal(await downloadText(task), `id,name\n${i + 1},${copyCsvField(value)}\n`, `eq.${value}`)
  }
  // in.() with quoted items holding commas, quotes and parentheses.
  const listed = INJECTIONS.slice(0, 3).map((v) => `"${v.replaceAll('"', '""')}"`).join(',')
  const inTask = await exportVia(gateway, 'people', new URLSearchParams([['name', `in.(${listed})`], ['select', 'id'], ['order', 'id']]).toString())
  assert.equal(await downloadText(inTask), 'id\n1\n2\n3\n')
  // not.eq: all but one; like with a quote in the pattern.
  const notTask = await exportVia(gateway, 'people', new URLSearchParams([['name', `not.eq.${INJECTIONS[0]}`], ['select', 'id'], ['order', 'id']]).toString())
  assert.equal(await downloadText(notTask), 'id\n2\n3\n4\n5\n6\n7\n8\n9\n')
  const likeTask = await exportVia(gateway, 'people', new URLSearchParams([['name', `like.*'*`], ['select', 'id'], ['order', 'id']]).toString())
  assert.equal(await downloadText(likeTask), 'id\n1\n3\n5\n')
  // An escaped backslash is a literal one: `a\'b` is the only name holding a backslash.
  const backslash = await exportVia(gateway, 'people', new URLSearchParams([['name', `like.*\\\\*`], ['select', 'id']]).toString())
  assert.equal(await downloadText(backslash), 'id\n5\n')
  // A value that matches nothing exports only the header.
  const none = await exportVia(gateway, 'people', new URLSearchParams([['name', `eq.' or '1'='1`], ['select', 'id']]).toString())
  assert.equal(await downloadText(none), 'id\n')

  const catalog = await catalogSnapshot()
  assert.deepEqual(catalog.publicTables, ['people', 't'])
  assert.equal(catalog.people, 9)
  assert.equal(catalog.t, 2)
})

test('hostile values in an imported file are stored as text, on the direct and the staged path', async () => {
  const values = [`z'); drop table t;--`, `"z""`, `'; truncate people; --`]
  // Direct COPY: clean quoted CSV.
  const direct = csvOf([['id', 'name', 'note'], ...values.map((v, i) => [String(100 + i), v, v])])
  const res = await gateway.fetch('/api/datasets/people/imports', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: direct })
  assert.equal(res.status, 202)
  const task = await waitForTask(gateway, ((await res.json()) as TaskJson).id)
  assert.equal(task.state, 'succeeded', JSON.stringify(task))
  // Staged: one bad age sends the file through the validator; onError=skip loads the rest.
  const staged = csvOf([['id', 'name', 'age'], ...values.map((v, i) => [String(200 + i), v, i === 1 ? `1); drop table t;--` : '5'])])
  const res2 = await gateway.fetch('/api/datasets/people/imports?onError=skip', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: staged })
  assert.equal(res2.status, 202)
  const task2 = await waitForTask(gateway, ((await res2.json()) as TaskJson).id)
  assert.equal(task2.state, 'succeeded', JSON.stringify(task2))
  const rows = await db.sql`select id, name, note from people where id >= 100 order by id`
  assert.deepEqual(rows.map((r) => [r.id, r.name, r.note]), [
    [100, values[0], values[0]], [101, values[1], values[1]], [102, values[2], values[2]],
    [200, values[0], null], [202, values[2], null],
  ])
  // Hostile column names in the file's header are only compared with the table's columns.
  for (const header of [`id,"name""); drop table t;--"`, `id,name,"note"" text); drop table t;--"`, `"id"" int); truncate people;--",name`]) {
    const res3 = await gateway.fetch('/api/datasets/people/imports', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: `${header}\n300,x\n` })
    assert.equal(res3.status, 202)
    const task3 = await waitForTask(gateway, ((await res3.json()) as TaskJson).id)
    assert.equal(task3.state, 'failed', JSON.stringify(task3))
    assert.equal(task3.errorCode, 'BAD_MAPPING', JSON.stringify(task3))
    assert.match(task3.error ?? '', /match no column of people/)
  }
  const catalog = await catalogSnapshot()
  assert.deepEqual(catalog.publicTables, ['people', 't'])
  assert.equal(catalog.t, 2)
  assert.equal((await db.sql`select count(*)::int as n from people where id = 300`)[0]!.n, 0)
  await db.sql`delete from people where id >= 100`
})

// ---------------------------------------------------------------------------
// 2. Path traversal
// ---------------------------------------------------------------------------

/** Sends the path exactly as written (fetch would resolve `..` segments before sending). */
function rawRequest(pathname: string, init: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string }> {
  const url = new URL(gateway.url)
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path: pathname, method: init.method ?? 'GET', headers: { Authorization: `Bearer ${gateway.adminToken}`, ...init.headers } }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(init.body)
  })
}

test('path traversal in dataset names, task ids, signed-link ids and static paths finds nothing', async () => {
  const storageBefore = await stateOfStorage()
  const apiPaths: [string, string][] = [
    ['POST', '/api/datasets/..%2F..%2Fetc%2Fpasswd/exports'],
    ['POST', '/api/datasets/..%2F..%2Fetc%2Fpasswd/imports'],
    ['POST', '/api/datasets/%2e%2e%2fpeople/exports'],
    ['POST', '/api/datasets/../datasets/people/../../../etc/passwd/exports'],
    ['GET', '/api/tasks/..%2F..%2Fetc%2Fpasswd'],
    ['GET', '/api/tasks/../../etc/passwd'],
    ['GET', '/api/tasks/..%2F..%2F..%2Fetc%2Fpasswd/download'],
    ['GET', '/api/tasks/%2e%2e%5c%2e%2e%5cetc%5cpasswd/download'],
    ['GET', '/api/tasks/....%2F%2F....%2F%2Fetc%2Fpasswd/download'],
    ['GET', '/api/tasks/exports%2F2026-01-01%2F00000000-0000-0000-0000-000000000000.csv/download'],
    ['POST', '/api/tasks/..%2F..%2Fetc%2Fpasswd/cancel'],
    ['POST', '/api/tasks/..%2F..%2Fetc%2Fpasswd/retry'],
    ['GET', '/api/..%2F..%2Fetc%2Fpasswd'],
  ]
  for (const [method, pathname] of apiPaths) {
    const res = await rawRequest(pathname, { method, headers: { 'Content-Type': 'text/csv' }, body: method === 'POST' ? 'id,name\n1,x\n' : undefined })
    assert.ok(res.status === 404 || res.status === 400, `${method} ${pathname}: ${res.status} ${res.text}`)
    assert.doesNotMatch(res.text, /root:/, `${method} ${pathname}`)
    // A literal `..` segment is resolved by the URL parser before routing (/api/tasks/../../etc/passwd is /etc/passwd):
    // it leaves /api, so the answer is the pages' 404.
    if (new URL(pathname, 'http://x').pathname.startsWith('/api/')) {
      const body = JSON.parse(res.text) as ErrorJson
      assert.match(body.code, /^[A-Z_]+$/, `${method} ${pathname}: ${res.text}`)
    } else {
      assert.equal(res.status, 404, `${method} ${pathname}`)
    }
  }
  // Pages and signed links answer with a page, not a file.
  for (const pathname of ['/files/..%2f..%2f..%2fetc%2fpasswd', '/files/..%2f..%2fetc%2fpasswd?expires=9999999999&signature=x', '/files/../../etc/passwd',
    '/static/..%2f..%2fpackage.json', '/static/../package.json', '/static/%2e%2e/%2e%2e/package.json', '/uploads/..%2F..%2Fetc%2Fpasswd', '/tasks/..%2F..%2Fetc%2Fpasswd/status',
    '/datasets/..%2F..%2Fetc%2Fpasswd']) {
    const res = await rawRequest(pathname)
    assert.ok(res.status >= 400 && res.status < 500, `${pathname}: ${res.status}`)
    assert.doesNotMatch(res.text, /root:|"name": "sluice"/, pathname)
  }
  await assertNothingStored(storageBefore, 'traversal requests')
})

test('an upload named ../../../../tmp/evil.csv or ..\\..\\evil is stored under a key the gateway made; the name is only display text', async () => {
  const marker = `evil-${process.pid}-${Date.now()}`
  const hostileNames = [`../../../../tmp/${marker}.csv`, `..\\..\\${marker}`, `/tmp/${marker}-abs.csv`, `${marker}\r\nX-Injected: 1.csv`, `..%2F..%2F${marker}.csv`]
  for (const fileName of hostileNames) {
    const form = new FormData()
    form.append('file', new Blob(['id,name\n500,from a hostile file name\n'], { type: 'text/csv' }), fileName)
    const res = await gateway.fetch('/api/datasets/people/imports?dryRun=true', { method: 'POST', body: form })
    const text = await res.text()
    assert.equal(res.status, 202, text)
    const task = await waitForTask(gateway, (JSON.parse(text) as TaskJson).id)
    assert.equal(task.state, 'succeeded', JSON.stringify(task))
    const [upload] = await db.sql`select storage_key, file_name from sluice.uploads order by created_at desc limit 1`
    assert.match(upload!.storage_key, /^uploads\/\d{4}-\d{2}-\d{2}\/[0-9a-f-]{36}\.csv$/, fileName)
    console.log(`upload named ${JSON.stringify(fileName)}: stored as ${upload!.storage_key}, displayed as ${JSON.stringify(upload!.file_name)}`)
    assert.doesNotMatch(String(upload!.file_name), /[\\/]/, `reduced to a base name: ${upload!.file_name}`)
  }
  // Nothing was written outside STORAGE_DIR, nor inside it under a name the request chose.
  for (const where of ['/tmp', path.dirname(gateway.storageDir), path.join(gateway.storageDir, '..', '..'), process.cwd()]) {
    const names = await readdir(where)
    assert.deepEqual(names.filter((n) => n.includes(marker)), [], `no ${marker}* in ${where}`)
  }
  const everything = await readdir(gateway.storageDir, { recursive: true })
  assert.deepEqual(everything.filter((n) => n.includes(marker) || n.includes('..') || n.includes('\\')), [])
  for (const file of await storedFiles('uploads', 'exports', 'reports')) {
    assert.match(file, /^(uploads|exports|reports)\/\d{4}-\d{2}-\d{2}\/[0-9a-f-]{36}(\.[a-z0-9]{1,8}){0,2}$/)
  }
  // The task page shows the name as text: no header was injected by the CR LF one.
  const pages = await gateway.fetch('/api/tasks')
  assert.equal(pages.headers.get('x-injected'), null)
})

// ---------------------------------------------------------------------------
// 3. Oversized input
// ---------------------------------------------------------------------------

/** One raw HTTP/1.1 exchange over a socket: the status line and what followed. */
function rawExchange(head: string): Promise<string> {
  const url = new URL(gateway.url)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname, () => socket.end(head))
    const chunks: Buffer[] = []
    socket.on('data', (c) => chunks.push(c))
    socket.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')))
    socket.on('error', (err) => (chunks.length ? resolve(Buffer.concat(chunks).toString('latin1')) : reject(err)))
  })
}

test('a 64 KiB request header is refused with 431 before any route runs', async () => {
  const storageBefore = await stateOfStorage()
  const answer = await rawExchange(`POST /api/datasets/people/exports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${gateway.adminToken}\r\nX-Padding: ${'a'.repeat(64 * 1024)}\r\n\r\n`)
  assert.match(answer, /^HTTP\/1\.1 431 /)
  assert.match(answer, /\r\n\r\n\{"error":"The request headers are larger than the 16 KiB this server accepts\.","code":"HEADERS_TOO_LARGE"\}$/)
  assert.match(await rawExchange('NOT HTTP AT ALL\r\n\r\n'), /^HTTP\/1\.1 400 [^]*"code":"BAD_REQUEST"/)
  // Many headers adding up to 64 KiB too.
  const many = Array.from({ length: 1024 }, (_, i) => `X-H${i}: ${'b'.repeat(60)}`).join('\r\n')
  assert.match(await rawExchange(`GET /api/datasets HTTP/1.1\r\nHost: x\r\n${many}\r\n\r\n`), /^HTTP\/1\.1 431 /)
  // A cookie of 64 KiB is a header like any other.
  assert.match(await rawExchange(`GET /api/datasets HTTP/1.1\r\nHost: x\r\nCookie: sluice_session=${'c'.repeat(64 * 1024)}\r\n\r\n`), /^HTTP\/1\.1 431 /)
  await assertNothingStored(storageBefore, 'oversized headers')
  assert.equal((await gateway.fetch('/healthz')).status, 200)
})

test('an upload over MAX_UPLOAD_BYTES is refused with 413 and nothing is stored, raw or multipart', async () => {
  const storageBefore = await stateOfStorage()
  const big = 'id,name\n' + Array.from({ length: 70_000 }, (_, i) => `${1000 + i},${'n'.repeat(10)}`).join('\n') + '\n' // ~1.1 MB > 1 MiB
  assert.ok(Buffer.byteLength(big) > 1024 * 1024)
  const raw = await gateway.fetch('/api/datasets/people/imports', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: big })
  assert.equal((await assertRefused(raw, 413, 'raw upload')).code, 'UPLOAD_TOO_LARGE')
  // Answered long before the body has arrived: the connection ends with the answer, so the client
  // does not send its next request on a connection the server is about to close.
  const huge = await gateway.fetch('/api/datasets/people/imports', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: Buffer.alloc(32 * 2 ** 20, 'id\n1\n') })
  assert.equal(huge.headers.get('connection'), 'close')
  assert.equal((await assertRefused(huge, 413, 'raw upload of 32 MiB')).code, 'UPLOAD_TOO_LARGE')
  assert.equal((await gateway.fetch('/healthz')).status, 200, 'the next request gets a working connection')
  const form = new FormData()
  form.append('file', new Blob([big], { type: 'text/csv' }), 'big.csv')
  const multipart = await gateway.fetch('/api/datasets/people/imports', { method: 'POST', body: form })
  assert.equal((await assertRefused(multipart, 413, 'multipart upload')).code, 'UPLOAD_TOO_LARGE')
  // The browser's upload form (the preview step) is held to the same limit.
  const page = await gateway.fetch('/datasets/people/uploads', { method: 'POST', body: form })
  assert.equal(page.status, 413)
  await assertNothingStored(storageBefore, 'too large uploads')
})

test('a ZIP, bzip2, xz, Zstandard or 7-Zip archive is refused with 415 naming it, and nothing is stored; a CSV starting with "BZh" is still a CSV', async () => {
  const storageBefore = await stateOfStorage()
  const archives: [string, Buffer][] = [
    ['ZIP', Buffer.concat([Buffer.from([0x50, 0x4b, 0x03, 0x04, 0x14, 0x00]), Buffer.from('people.csv id,name\n1,x\n')])],
    ['bzip2', Buffer.concat([Buffer.from('BZh91AY&SY'), Buffer.alloc(40, 7)])],
    ['xz', Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), Buffer.alloc(40, 1)])],
    ['Zstandard', Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(40, 2)])],
    ['7-Zip', Buffer.concat([Buffer.from([0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]), Buffer.alloc(40, 3)])],
  ]
  for (const [name, body] of archives) {
    const raw = await gateway.fetch('/api/datasets/people/imports', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body })
    const refused = await assertRefused(raw, 415, `${name} archive`)
    assert.equal(refused.code, 'UNSUPPORTED_ARCHIVE')
    assert.match(refused.error, new RegExp(`${name} archive`))
    const form = new FormData()
    form.set('file', new Blob([body]), `people.${name.toLowerCase()}`)
    assert.equal((await assertRefused(await gateway.fetch('/api/datasets/people/imports', { method: 'POST', body: form }), 415, `${name} multipart`)).code, 'UNSUPPORTED_ARCHIVE')
  }
  await assertNothingStored(storageBefore, 'archives')
  const csv = await gateway.fetch('/api/datasets/people/imports?dryRun=true', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: 'BZh_code\nx\n' })
  assert.equal(csv.status, 202, 'a file whose first bytes are "BZh" but no bzip2 block is read as CSV')
  await waitForTask(gateway, ((await csv.json()) as { id: string }).id)
})

test('a gzip bomb (10 MB of zeros in ~10 KB) is refused with 413 at MAX_UPLOAD_BYTES, as .csv.gz, gzip body or Content-Encoding', async () => {
  const storageBefore = await stateOfStorage()
  const bomb = gzipSync(Buffer.alloc(10 * 1024 * 1024, '0'), { level: 9 })
  assert.ok(bomb.length < 20 * 1024, `${bomb.length} bytes`)
  const rssBefore = process.memoryUsage().rss
  const form = new FormData()
  form.append('file', new Blob([bomb], { type: 'application/gzip' }), 'bomb.csv.gz')
  const requests: [string, RequestInit][] = [
    ['multipart .csv.gz', { method: 'POST', body: form }],
    ['gzip body', { method: 'POST', headers: { 'Content-Type': 'application/gzip' }, body: bomb }],
    ['Content-Encoding: gzip', { method: 'POST', headers: { 'Content-Type': 'text/csv', 'Content-Encoding': 'gzip' }, body: bomb }],
    ['gzip inside Content-Encoding: gzip', { method: 'POST', headers: { 'Content-Type': 'text/csv', 'Content-Encoding': 'gzip' }, body: gzipSync(bomb) }],
  ]
  for (const [what, init] of requests) {
    const res = await gateway.fetch('/api/datasets/people/imports', init)
    assert.equal((await assertRefused(res, 413, what)).code, 'UPLOAD_TOO_LARGE', what)
  }
  const growth = process.memoryUsage().rss - rssBefore
  console.log(`gzip bombs: RSS grew ${(growth / 2 ** 20).toFixed(1)} MiB`)
  assert.ok(growth < 100 * 2 ** 20, `RSS grew ${growth} bytes`)
  await assertNothingStored(storageBefore, 'gzip bombs')
})

test('a header line of a million commas is refused with TOO_MANY_FIELDS, and nothing is loaded', async () => {
  const storageBefore = await stateOfStorage()
  const body = 'id' + ','.repeat(1_000_000) + '\n1\n'
  const started = Date.now()
  const res = await gateway.fetch('/api/datasets/people/imports', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body })
  const answer = await assertRefused(res, 400, 'a million columns')
  assert.equal(answer.code, 'TOO_MANY_FIELDS')
  assert.match(answer.error, /more than 10000 fields/)
  console.log(`a million columns: refused in ${Date.now() - started} ms`)
  await assertNothingStored(storageBefore, 'a million columns')
  // Tab-separated too, where the limit has to be found without knowing the delimiter up front.
  const tabs = await gateway.fetch('/api/datasets/people/imports?delimiter=tab', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: 'id' + '\t'.repeat(200_000) + '\n' })
  assert.equal((await assertRefused(tabs, 400, 'tabs')).code, 'TOO_MANY_FIELDS')
  await assertNothingStored(storageBefore, 'a million columns')
  // A wide record further down is found by the import's reader: the task fails with the same code.
  const later = await gateway.fetch('/api/datasets/people/imports', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: 'id,name\n1,a\n2' + ','.repeat(500_000) + '\n' })
  assert.equal(later.status, 202)
  const task = await waitForTask(gateway, ((await later.json()) as TaskJson).id)
  assert.equal(task.state, 'failed')
  assert.equal(task.errorCode, 'TOO_MANY_FIELDS', JSON.stringify(task))
  assert.match(task.error ?? '', /line 3: the record has more than 10000 fields/)
  const [people] = await db.sql`select count(*)::int as n from people`
  assert.equal(people!.n, 9)
})

/**
 * Streams a body of `totalBytes` of 'a' (1 MiB at a time, never held whole) to `pathname`,
 * as a multipart file part or a raw CSV body, and returns the answer as soon as it comes.
 */
function streamHugeField(target: TestGateway, pathname: string, totalBytes: number, asMultipart: boolean): Promise<{ status: number; text: string; sentBytes: number; ms: number }> {
  const url = new URL(target.url)
  const boundary = 'sluiceHostileBoundary'
  const chunk = Buffer.alloc(2 ** 20, 'a')
  let sentBytes = 0
  let answered = false
  async function* body() {
    if (asMultipart) yield Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.csv"\r\nContent-Type: text/csv\r\n\r\nname\r\n`)
    else yield Buffer.from('name\n')
    for (let sent = 0; sent < totalBytes && !answered; sent += chunk.length) {
      sentBytes += chunk.length
      yield chunk
    }
    if (asMultipart) yield Buffer.from(`\r\n--${boundary}--\r\n`)
  }
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const source = Readable.from(body(), { objectMode: false })
    const req = request({
      host: url.hostname, port: url.port, path: pathname, method: 'POST',
      headers: { Authorization: `Bearer ${target.adminToken}`, 'Content-Type': asMultipart ? `multipart/form-data; boundary=${boundary}` : 'text/csv' },
    }, (res) => {
      answered = true
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        source.destroy()
        resolve({ status: res.statusCode!, text: Buffer.concat(chunks).toString('utf8'), sentBytes, ms: Date.now() - started })
      })
    })
    req.on('error', (err) => { if (!answered) reject(err) }) // the server may close while we still send
    source.pipe(req)
  })
}

test('a 1 GiB field with no line break is refused with 413 FIELD_TOO_LARGE while it streams, and memory stays bounded', async () => {
  const wide = await startTestGateway(db.url) // MAX_UPLOAD_BYTES at its default, 5 GiB
  try {
    const uploadsBefore = await countRows('sluice.uploads')
    const tasksBefore = await countRows('sluice.tasks')
    global.gc?.()
    const rssBefore = process.memoryUsage().rss
    let peak = rssBefore
    const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 50)
    try {
      for (const asMultipart of [true, false]) {
        const answer = await streamHugeField(wide, '/api/datasets/people/imports', 2 ** 30, asMultipart)
        const what = asMultipart ? 'multipart' : 'raw body'
        console.log(`1 GiB field (${what}): ${answer.status} after ${answer.ms} ms, ${(answer.sentBytes / 2 ** 20).toFixed(0)} MiB sent`)
        assert.equal(answer.status, 413, `${what}: ${answer.text}`)
        const body = JSON.parse(answer.text) as ErrorJson
        assert.equal(body.code, 'FIELD_TOO_LARGE', what)
        assert.match(body.error, /longer than 64 MiB with no line break/)
      }
    } finally {
      clearInterval(sampler)
    }
    const growth = peak - rssBefore
    console.log(`1 GiB field: peak RSS ${(peak / 2 ** 20).toFixed(0)} MiB, ${(growth / 2 ** 20).toFixed(0)} MiB over the start`)
    assert.ok(growth < 200 * 2 ** 20, `RSS grew ${(growth / 2 ** 20).toFixed(0)} MiB`)
    assert.equal(await countRows('sluice.uploads'), uploadsBefore)
    assert.equal(await countRows('sluice.tasks'), tasksBefore)
    for (let i = 0; i < 20 && (await readdir(path.join(wide.storageDir, 'tmp'))).length > 0; i++) await new Promise((r) => setTimeout(r, 100))
    assert.deepEqual(await readdir(path.join(wide.storageDir, 'tmp')), [])
    assert.deepEqual(await readdir(path.join(wide.storageDir, 'uploads'), { recursive: true }), [])
    assert.equal((await wide.fetch('/healthz')).status, 200)
  } finally {
    await wide.stop()
  }
})

// ---------------------------------------------------------------------------
// 4. Malformed multipart
// ---------------------------------------------------------------------------

const BOUNDARY = 'xXsluiceXx'
const part = (headers: string, content: string) => `--${BOUNDARY}\r\n${headers}\r\n\r\n${content}\r\n`
const filePart = (content: string, fileName = 'people.csv', field = 'file') =>
  part(`Content-Disposition: form-data; name="${field}"; filename="${fileName}"\r\nContent-Type: text/csv`, content)
const closing = `--${BOUNDARY}--\r\n`
const MULTIPART = `multipart/form-data; boundary=${BOUNDARY}`
const ROWS = 'id,name\n700,malformed\n'

test('malformed multipart bodies get a 4xx with a clear message, nothing is stored, and the gateway keeps serving', async () => {
  const storageBefore = await stateOfStorage()
  const cases: { what: string; contentType: string; body: string; status: number; code: string; message: RegExp }[] = [
    { what: 'no boundary', contentType: 'multipart/form-data', body: filePart(ROWS) + closing, status: 400, code: 'BAD_MULTIPART', message: /boundary/ },
    { what: 'an empty boundary', contentType: 'multipart/form-data; boundary=', body: filePart(ROWS) + closing, status: 400, code: 'BAD_MULTIPART', message: /boundary/ },
    { what: 'no file part', contentType: MULTIPART, body: part('Content-Disposition: form-data; name="note"', 'hello') + closing, status: 400, code: 'NO_FILE', message: /no file/ },
    { what: 'a file part with no filename', contentType: MULTIPART, body: part('Content-Disposition: form-data; name="file"', ROWS) + closing, status: 400, code: 'NO_FILE', message: /no file/ },
    { what: 'a file under another field name', contentType: MULTIPART, body: filePart(ROWS, 'people.csv', 'upload') + closing, status: 400, code: 'NO_FILE', message: /field named "file"/ },
    { what: 'two file parts', contentType: MULTIPART, body: filePart(ROWS) + filePart(ROWS, 'second.csv') + closing, status: 400, code: 'TOO_MANY_FILES', message: /one file/ },
    { what: 'a body with no parts at all', contentType: MULTIPART, body: 'hello, this is not multipart', status: 400, code: 'BAD_MULTIPART', message: /malformed/ },
    { what: 'an empty body', contentType: MULTIPART, body: '', status: 400, code: 'BAD_MULTIPART', message: /malformed/ },
    { what: 'a body cut after the file part (no closing boundary)', contentType: MULTIPART, body: filePart(ROWS), status: 400, code: 'BAD_MULTIPART', message: /malformed/ },
    { what: 'a body cut inside the file', contentType: MULTIPART, body: filePart(ROWS).slice(0, -12), status: 400, code: 'BAD_MULTIPART', message: /malformed/ },
    { what: 'a part without headers', contentType: MULTIPART, body: `--${BOUNDARY}\r\n\r\n${ROWS}\r\n${closing}`, status: 400, code: 'BAD_MULTIPART', message: /malformed/ },
    { what: 'wrong content type (JSON)', contentType: 'application/json', body: '{"file":"id,name"}', status: 415, code: 'BAD_CONTENT_TYPE', message: /not a CSV upload/ },
    { what: 'wrong content type (multipart/mixed)', contentType: `multipart/mixed; boundary=${BOUNDARY}`, body: filePart(ROWS) + closing, status: 415, code: 'BAD_CONTENT_TYPE', message: /not a CSV upload/ },
    { what: 'wrong content type (urlencoded)', contentType: 'application/x-www-form-urlencoded', body: 'file=id%2Cname', status: 415, code: 'BAD_CONTENT_TYPE', message: /not a CSV upload/ },
  ]
  for (const c of cases) {
    const res = await gateway.fetch('/api/datasets/people/imports', { method: 'POST', headers: { 'Content-Type': c.contentType }, body: c.body })
    const body = await assertRefused(res, c.status, c.what)
    assert.equal(body.code, c.code, `${c.what}: ${JSON.stringify(body)}`)
    assert.match(body.error, c.message, c.what)
    await assertNothingStored(storageBefore, c.what)
  }
  const brotli = await gateway.fetch('/api/datasets/people/imports', { method: 'POST', headers: { 'Content-Type': 'text/csv', 'Content-Encoding': 'br' }, body: ROWS })
  assert.equal((await assertRefused(brotli, 415, 'Content-Encoding: br')).code, 'BAD_ENCODING')
  const notGzip = await gateway.fetch('/api/datasets/people/imports', { method: 'POST', headers: { 'Content-Type': 'text/csv', 'Content-Encoding': 'gzip' }, body: ROWS })
  assert.equal((await assertRefused(notGzip, 400, 'Content-Encoding: gzip on plain text')).code, 'BAD_GZIP')
  const badGz = Buffer.concat([gzipSync(Buffer.from(ROWS)).subarray(0, 12), Buffer.from('garbage after the gzip header')])
  const cutGzip = await gateway.fetch('/api/datasets/people/imports', { method: 'POST', headers: { 'Content-Type': 'application/gzip' }, body: badGz })
  assert.equal((await assertRefused(cutGzip, 400, 'a broken .gz')).code, 'BAD_GZIP')
  await assertNothingStored(storageBefore, 'bad encodings')

  // The same refusals on the browser's upload form (it answers with a page).
  const page = await gateway.fetch('/datasets/people/uploads', { method: 'POST', headers: { 'Content-Type': MULTIPART }, body: filePart(ROWS) + filePart(ROWS, 'second.csv') + closing })
  assert.equal(page.status, 400)
  assert.match(await page.text(), /one file/)
  await assertNothingStored(storageBefore, 'the upload form')

  const [people] = await db.sql`select count(*)::int as n from people where id = 700`
  assert.equal(people!.n, 0)
  assert.equal((await gateway.fetch('/healthz')).status, 200)
  // And a well-formed upload still works after all of them.
  const good = await gateway.fetch('/api/datasets/people/imports?dryRun=true', { method: 'POST', headers: { 'Content-Type': MULTIPART }, body: filePart(ROWS) + closing })
  assert.equal(good.status, 202)
  assert.equal((await waitForTask(gateway, ((await good.json()) as TaskJson).id)).state, 'succeeded')
})

test('a multipart upload aborted mid-stream leaves no upload, no task and no file, and the gateway keeps serving', async () => {
  const storageBefore = await stateOfStorage()
  const url = new URL(gateway.url)
  for (const cutAfter of [10, 200, 64 * 1024, 3 * 1024 * 1024]) {
    await new Promise<void>((resolve) => {
      const req = request({
        host: url.hostname, port: url.port, path: '/api/datasets/people/imports', method: 'POST',
        headers: { Authorization: `Bearer ${gateway.adminToken}`, 'Content-Type': MULTIPART, 'Content-Length': String(10 * 1024 * 1024) },
      })
      req.on('error', () => resolve()) // we hang up ourselves
      req.on('response', () => { req.destroy(); resolve() }) // a 413 before the cut is fine too
      const head = Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="cut.csv"\r\nContent-Type: text/csv\r\n\r\nid,name\n`)
      const all = Buffer.concat([head, Buffer.alloc(Math.max(0, cutAfter - head.length), '9')]).subarray(0, cutAfter)
      req.write(all, () => setTimeout(() => { req.destroy(); resolve() }, 100))
    })
    await assertNothingStored(storageBefore, `aborted after ${cutAfter} bytes`)
    assert.equal((await gateway.fetch('/healthz')).status, 200)
  }
})

// ---------------------------------------------------------------------------
// What the fuzz test (test/fuzz.test.ts) found, pinned down
// ---------------------------------------------------------------------------

test('NUL bytes in a field or a header end the import with a clear, recorded error instead of a raw SQLSTATE', async () => {
  const inField = await gateway.fetch('/api/datasets/people/imports?onError=skip', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: 'id,name\n800,ok\n801,bad\0name\n' })
  assert.equal(inField.status, 202)
  const skipped = await waitForTask(gateway, ((await inField.json()) as TaskJson).id)
  assert.equal(skipped.state, 'succeeded', JSON.stringify(skipped))
  const details = (skipped as TaskJson & { details: { inserted: number; failed: number; errors: { line: number; message: string }[] } }).details
  assert.equal(details.inserted, 1)
  assert.deepEqual(details.errors, [{ line: 3, message: 'field 2 holds a NUL character (byte 0x00), which PostgreSQL cannot store in text' }])
  assert.deepEqual((await db.sql`select id from people where id >= 800 order by id`).map((r) => r.id), [800])

  const inHeader = await gateway.fetch('/api/datasets/people/imports', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: 'id,na\0me\n802,x\n' })
  const failed = await waitForTask(gateway, ((await inHeader.json()) as TaskJson).id)
  assert.equal(failed.state, 'failed', JSON.stringify(failed))
  assert.equal(failed.attempts, 1, 'failed once, not retried until abandoned')
  assert.match(failed.errorCode ?? '', /^[A-Z_]+$/)
  assert.match(failed.error ?? '', /na\\0me/)
  await db.sql`delete from people where id >= 800`
})

test('an upsert that collides on another unique key reports the rows instead of failing with a raw 23505', async () => {
  await db.sql.unsafe(`create table accounts (id int primary key, email text unique, name text)`)
  await db.sql.unsafe(`insert into accounts values (1, 'a@example.com', 'a'), (2, 'b@example.com', 'b')`)
  try {
    // Line 2 updates id 1 (fine); line 3 would give id 3 the email id 2 already has.
    const csv = 'id,email,name\n1,a@example.com,a2\n3,b@example.com,c\n4,d@example.com,d\n'
    const abort = await gateway.fetch('/api/datasets/accounts/imports?mode=upsert', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: csv })
    const failed = await waitForTask(gateway, ((await abort.json()) as TaskJson).id)
    assert.equal(failed.state, 'failed')
    assert.equal(failed.errorCode, 'ROWS_INVALID', JSON.stringify(failed))
    assert.match(failed.error ?? '', /line 3, a row with \(email\) = \(b@example\.com\) already exists in a row with another id/)
    const skip = await gateway.fetch('/api/datasets/accounts/imports?mode=upsert&onError=skip', { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: csv })
    const done = await waitForTask(gateway, ((await skip.json()) as TaskJson).id)
    assert.equal(done.state, 'succeeded', JSON.stringify(done))
    assert.deepEqual((await db.sql`select id, email, name from accounts order by id`).map((r) => [r.id, r.email, r.name]),
      [[1, 'a@example.com', 'a2'], [2, 'b@example.com', 'b'], [4, 'd@example.com', 'd']])
  } finally {
    await db.sql.unsafe('drop table accounts')
  }
})

test('an unparsable form body and a NUL in a dataset name are 4xx, not 500', async () => {
  const signIn = await gateway.fetchAnonymously('/sign-in', { method: 'POST', headers: { 'Content-Type': 'multipart/form-data; boundary=x' }, body: 'not multipart' })
  assert.equal(signIn.status, 400)
  const tokens = await gateway.fetch('/api/tokens', { method: 'POST', headers: { 'Content-Type': 'multipart/form-data' }, body: 'x' })
  assert.ok(tokens.status >= 400 && tokens.status < 500, `POST /api/tokens: ${tokens.status}`)
  for (const pathname of ['/datasets/%00', '/api/datasets/%00/exports', '/api/datasets/a%00b/imports']) {
    const res = await gateway.fetch(pathname, { method: pathname === '/datasets/%00' ? 'GET' : 'POST', headers: { 'Content-Type': 'text/csv' }, body: pathname === '/datasets/%00' ? undefined : 'id\n1\n' })
    assert.equal(res.status, 404, pathname)
  }
})
