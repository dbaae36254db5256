import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import { gunzipSync } from 'node:zlib'
import { parse } from 'csv-parse/sync'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { exportVia, startTestGateway, waitForTask, type TaskJson, type TestGateway } from './support/gateway.ts'

let db: TestDatabase
let gateway: TestGateway

before(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table people (
      id int primary key,
      name text,
      note text,
      score numeric(6, 2),
      active boolean,
      born date,
      tags text[],
      data jsonb
    );
    insert into people values
      (1, 'Ada', 'plain', 9.5, true, '1815-12-10', '{math,poetry}', '{"a": 1}'),
      (2, 'Zoë', '', 7.25, false, '1990-02-28', '{}', null),
      (3, 'O''Brien', null, null, null, null, null, '{"q": "say \\"hi\\""}'),
      (4, 'comma, inside', E'line one\\nline two', 3, true, '2000-01-01', '{"with space","with,comma"}', '[]'),
      (5, 'quote " inside', E'crlf\\r\\nhere', 5, false, '2024-02-29', '{x}', '{}'),
      (6, '東京 ✓ 🚀', '  padded  ', 10, true, '1970-01-01', null, 'true'),
      (7, 'back\\slash', 'tab	inside', -1.5, null, '1969-07-20', '{NULL,""}', '"str"'),
      (8, 'ada lower', 'Ada again', 0, true, '2001-09-09', '{}', '1');
    create table "Odd ""Name"" Ünïcode" ("Line Item" int primary key, "quote""d" text, "with,comma" text, "a.b" int);
    insert into "Odd ""Name"" Ünïcode" values (1, 'x', 'one', 10), (2, 'y', 'two', 20), (3, 'x', 'three', 30);
    create view slow_rows as select g as n, pg_sleep(0.01)::text as slept from generate_series(1, 3000) g;
  `)
  gateway = await startTestGateway(db.url)
})

after(async () => {
  await gateway?.stop()
  await db?.drop()
})

type Cell = string | null

/** Parses CSV keeping NULL (unquoted empty) apart from the empty string (quoted ""), as Postgres writes them. */
function parseCsv(text: string): Cell[][] {
  return parse(text, { cast: (value, context) => (value === '' && !context.quoting ? null : value), relax_column_count: false }) as Cell[][]
}

async function download(task: TaskJson, init?: RequestInit): Promise<Response> {
  assert.equal(task.state, 'succeeded', `export failed: ${task.error}`)
  assert.ok(task.download)
  return gateway.fetch(new URL(task.download).pathname, init)
}

async function exportRows(dataset: string, query: string): Promise<Cell[][]> {
  const task = await exportVia(gateway, dataset, query)
  const res = await download(task)
  assert.equal(res.status, 200)
  const rows = parseCsv(await res.text())
  assert.equal(task.progress.rows, rows.length - 1, 'the task counts every row it wrote')
  return rows
}

/** The same rows, asked of Postgres directly with hand-written SQL, every value as text. */
async function directRows(sqlText: string): Promise<Cell[][]> {
  const result = await db.sql.unsafe(sqlText).values()
  return result.map((row) => row.map((v) => (v === null ? null : String(v))))
}

// Booleans as COPY writes them (t/f): `::text` would spell them out.
const ALL = `select id::text, name, note, score::text, case active when true then 't' when false then 'f' end, born::text, tags::text, data::text from people`
const HEADER = ['id', 'name', 'note', 'score', 'active', 'born', 'tags', 'data']

test('an export holds exactly what the database holds, awkward values included', async () => {
  const rows = await exportRows('people', 'order=id')
  assert.deepEqual(rows[0], HEADER)
  assert.deepEqual(rows.slice(1), await directRows(`${ALL} order by id`))
  // Spot checks of what a CSV reader must see:
  assert.equal(rows[2]![2], '', 'empty string stays an empty string')
  assert.equal(rows[3]![2], null, 'NULL stays NULL')
  assert.equal(rows[5]![2], 'crlf\r\nhere')
  assert.equal(rows[6]![1], '東京 ✓ 🚀')
})

describe('every filter operator selects what the same SQL selects', () => {
  const cases: [string, string][] = [
    ['id=eq.3', 'id = 3'],
    ['name=eq.Zoë', `name = 'Zoë'`],
    ['id=neq.3', 'id <> 3'],
    ['score=gt.5', 'score > 5'],
    ['score=gte.5', 'score >= 5'],
    ['score=lt.5', 'score < 5'],
    ['score=lte.5', 'score <= 5'],
    ['born=gte.2000-01-01', `born >= '2000-01-01'`],
    ['name=like.*ada*', `name like '%ada%'`],
    ['name=ilike.ada*', `name ilike 'ada%'`],
    ['name=match.^[A-Z]', `name ~ '^[A-Z]'`],
    ['name=imatch.^a', `name ~* '^a'`],
    ['id=in.(1,3,5)', 'id in (1, 3, 5)'],
    ['name=in.("comma, inside","quote "" inside")', `name in ('comma, inside', 'quote " inside')`],
    ['id=in.()', 'false'],
    ['note=is.null', 'note is null'],
    ['note=not.is.null', 'note is not null'],
    ['active=is.true', 'active is true'],
    ['active=is.false', 'active is false'],
    ['active=is.unknown', 'active is unknown'],
    ['id=not.eq.3', 'not (id = 3)'],
    ['name=not.like.*a*', `not (name like '%a%')`],
    ['id=not.in.(1,2)', 'not (id in (1, 2))'],
    ['tags=eq.{}', `tags = '{}'`],
    ['data=eq.{"a": 1}', `data = '{"a": 1}'`],
    ['id=gt.1&id=lt.5', 'id > 1 and id < 5'],
    ["name=eq.x'); drop table people; --", `name = 'x''); drop table people; --'`],
  ]
  for (const [query, where] of cases) {
    test(`${query}  ≡  where ${where}`, async () => {
      const rows = await exportRows('people', `${encodeQuery(query)}&order=id`)
      const expected = await directRows(`${ALL} where ${where} order by id`)
      assert.deepEqual(rows.slice(1), expected)
    })
  }

  test('the table survives an injection attempt in a value', async () => {
    const [row] = await db.sql`select count(*)::int as count from people`
    assert.equal(row!.count, 8)
  })
})

test('select, order, limit and offset shape the file', async () => {
  const rows = await exportRows('people', 'select=name,id&order=score.desc.nullslast,id.asc&limit=3&offset=1')
  assert.deepEqual(rows, [['name', 'id'], ...(await directRows('select name, id::text from people order by score desc nulls last, id asc limit 3 offset 1'))])
  const nullsFirst = await exportRows('people', 'select=id&order=score.asc.nullsfirst')
  assert.equal(nullsFirst[1]![0], '3', 'the NULL score comes first')
})

test('odd identifiers work in select, filters, order and the file name', async () => {
  const name = 'Odd "Name" Ünïcode'
  const query = `select=${encodeURIComponent('"with,comma","a.b"')}&${encodeURIComponent('quote"d')}=eq.x&order=${encodeURIComponent('"Line Item".desc')}`
  const task = await exportVia(gateway, name, query)
  const res = await download(task)
  assert.deepEqual(parseCsv(await res.text()), [['with,comma', 'a.b'], ['three', '30'], ['one', '10']])
  assert.match(res.headers.get('content-disposition')!, /^attachment; filename="Odd__Name__.{1,12}-\d{4}-\d{2}-\d{2}\.csv"; filename\*=UTF-8''Odd%20%22Name%22%20%C3%9Cn%C3%AFcode-\d{4}-\d{2}-\d{2}\.csv$/)
  const dotted = await exportRows(name, `select=${encodeURIComponent('a.b')}&order=${encodeURIComponent('a.b.desc')}`)
  assert.deepEqual(dotted, [['a.b'], ['30'], ['20'], ['10']])
})

describe('excelSafe=true neutralises cells a spreadsheet would run as formulas', () => {
  before(async () => {
    await db.sql.unsafe(`
      create type mood as enum ('=calm', 'fine');
      create table cells (id int primary key, body text, label varchar(40), feeling mood, amount numeric, tags text[]);
      insert into cells values
        (1, '=HYPERLINK("http://evil.example","click")', '+cmd|calc', '=calm', -5, '{=x}'),
        (2, '@SUM(A1:A9)', '-2+3', 'fine', 1.5, null),
        (3, E'\\tTAB', E'\\rCR', null, null, null),
        (4, '-4', '+1.5e3', 'fine', -0.25, '{}'),
        (5, 'plain = text', '', null, 0, null),
        (6, null, '-', null, null, null);
    `)
  })

  test('text, varchar and enum cells starting with = + - @ tab or CR get an apostrophe; numbers, NULLs and other cells are untouched', async () => {
    const rows = await exportRows('cells', 'excelSafe=true&order=id')
    assert.deepEqual(rows, [
      ['id', 'body', 'label', 'feeling', 'amount', 'tags'],
      ['1', `'=HYPERLINK("http://evil.example","click")`, "'+cmd|calc", "'=calm", '-5', '{=x}'],
      ['2', "'@SUM(A1:A9)", "'-2+3", 'fine', '1.5', null],
      ['3', "'\tTAB", "'\rCR", null, null, null],
      ['4', '-4', '+1.5e3', 'fine', '-0.25', '{}'],
      ['5', 'plain = text', '', null, '0', null],
      ['6', null, "'-", null, null, null],
    ])
  })

  test('without it, the cells are exported exactly as stored', async () => {
    const rows = await exportRows('cells', 'order=id&select=id,body,label')
    assert.deepEqual(rows.slice(1, 3), [['1', '=HYPERLINK("http://evil.example","click")', '+cmd|calc'], ['2', '@SUM(A1:A9)', '-2+3']])
  })

  test('the page form offers it, and a bad value is a 400', async () => {
    const page = await (await gateway.fetch('/datasets/cells')).text()
    assert.match(page, /name="excelSafe"/)
    const res = await gateway.fetch('/api/datasets/cells/exports?excelSafe=maybe', { method: 'POST' })
    assert.equal(res.status, 400)
    assert.match(((await res.json()) as { error: string }).error, /excelSafe must be true or false/)
  })
})

describe('bad requests are a 400 naming the problem, and queue nothing', () => {
  const cases: [string, RegExp][] = [
    ['nope=eq.1', /"nope" is not a column of people/],
    ['id=foo.1', /unknown operator "foo"/],
    ['id=5', /write it as id=operator\.value/],
    ['id=eq.abc', /invalid input syntax for type integer: "abc"/],
    ['born=eq.2024-02-30', /date\/time field value out of range|invalid input syntax for type date/],
    ['data=like', /write it as data=operator\.value/],
    ['order=nope.desc', /order: "nope" is not a column/],
    ['order=id.sideways', /order: "id\.sideways" is not a column/],
    ['limit=-1', /limit must be a whole number/],
    ['offset=ten', /offset must be a whole number/],
    ['select=id,nope', /select: "nope" is not a column/],
    ['id=in.("1,2)', /double quote is not closed/],
    ['id=in.1,2', /write a list as in\.\(a,b,c\)/],
    ['active=is.maybe', /is\. takes one of null, not_null, true, false, unknown/],
    ['limit=1&limit=2', /"limit" is given twice/],
    ['gzip=perhaps', /gzip must be true or false/],
    [`${encodeURIComponent('name; drop table people')}=eq.1`, /"name; drop table people" is not a column/],
  ]
  for (const [query, message] of cases) {
    test(query, async () => {
      const before = await db.sql`select count(*)::int as n from sluice.tasks`
      const res = await gateway.fetch(`/api/datasets/people/exports?${encodeQuery(query)}`, { method: 'POST' })
      assert.equal(res.status, 400)
      const body = (await res.json()) as { error: string; code: string }
      assert.match(body.error, message)
      const afterCount = await db.sql`select count(*)::int as n from sluice.tasks`
      assert.equal(afterCount[0]!.n, before[0]!.n)
    })
  }
})

test('gzip=true writes the same CSV, compressed', async () => {
  const plain = await (await download(await exportVia(gateway, 'people', 'order=id'))).arrayBuffer()
  const task = await exportVia(gateway, 'people', 'order=id&gzip=true')
  assert.match(task.file!.name, /^people-\d{4}-\d{2}-\d{2}\.csv\.gz$/)
  const res = await download(task)
  assert.equal(res.headers.get('content-type'), 'application/gzip')
  const unzipped = gunzipSync(Buffer.from(await res.arrayBuffer()))
  assert.deepEqual(unzipped, Buffer.from(plain))
})

describe('downloads', () => {
  let task: TaskJson
  let whole: Buffer
  before(async () => {
    task = await exportVia(gateway, 'people', 'order=id')
    whole = Buffer.from(await (await download(task)).arrayBuffer())
  })

  test('carry type, length, a dated attachment name and the sha256 as ETag', async () => {
    const res = await download(task)
    assert.equal(res.headers.get('content-type'), 'text/csv; charset=utf-8')
    assert.equal(res.headers.get('content-length'), String(whole.length))
    assert.match(res.headers.get('content-disposition')!, /^attachment; filename="people-\d{4}-\d{2}-\d{2}\.csv"/)
    const { createHash } = await import('node:crypto')
    assert.equal(res.headers.get('etag'), `"${createHash('sha256').update(whole).digest('hex')}"`)
    assert.equal(task.file!.size, whole.length)
  })

  test('If-None-Match answers 304 without a body', async () => {
    const etag = (await download(task)).headers.get('etag')!
    const res = await download(task, { headers: { 'If-None-Match': etag } })
    assert.equal(res.status, 304)
    assert.equal((await res.arrayBuffer()).byteLength, 0)
  })

  test('Range answers 206 and the pieces resume into the whole file', async () => {
    const first = await download(task, { headers: { Range: 'bytes=0-99' } })
    assert.equal(first.status, 206)
    assert.equal(first.headers.get('content-range'), `bytes 0-99/${whole.length}`)
    const rest = await download(task, { headers: { Range: 'bytes=100-' } })
    assert.equal(rest.status, 206)
    const joined = Buffer.concat([Buffer.from(await first.arrayBuffer()), Buffer.from(await rest.arrayBuffer())])
    assert.deepEqual(joined, whole)
    const suffix = await download(task, { headers: { Range: 'bytes=-10' } })
    assert.deepEqual(Buffer.from(await suffix.arrayBuffer()), whole.subarray(whole.length - 10))
    const beyond = await download(task, { headers: { Range: `bytes=${whole.length + 5}-` } })
    assert.equal(beyond.status, 416)
    assert.equal(beyond.headers.get('content-range'), `bytes */${whole.length}`)
  })

  test('HEAD gives the headers and no body', async () => {
    const res = await download(task, { method: 'HEAD' })
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-length'), String(whole.length))
    assert.equal((await res.arrayBuffer()).byteLength, 0)
  })

  test('a task that is not finished has no file yet; an unknown task is a 404', async () => {
    const unknown = await gateway.fetch('/api/tasks/00000000-0000-4000-8000-000000000000/download')
    assert.equal(unknown.status, 404)
    const notUuid = await gateway.fetch('/api/tasks/..%2F..%2Fetc%2Fpasswd/download')
    assert.equal(notUuid.status, 404)
  })
})

test('cancel stops a running export soon, and leaves no file behind', async () => {
  const res = await gateway.fetch('/api/datasets/slow_rows/exports', { method: 'POST' })
  assert.equal(res.status, 202)
  const { id } = (await res.json()) as TaskJson
  await waitForTask(gateway, id, (t) => t.state === 'running' && t.progress.rows > 0)
  const status = await gateway.fetch(`/api/tasks/${id}`)
  assert.equal(status.headers.get('retry-after'), '1')
  const cancelledAt = Date.now()
  const cancel = await gateway.fetch(`/api/tasks/${id}/cancel`, { method: 'POST' })
  assert.equal(cancel.status, 202)
  const task = await waitForTask(gateway, id, (t) => t.state !== 'running', 10_000)
  assert.equal(task.state, 'cancelled')
  assert.ok(Date.now() - cancelledAt < 5_000, `took ${Date.now() - cancelledAt} ms to stop`)
  assert.equal(task.download, null)
  assert.deepEqual(await readdir(path.join(gateway.storageDir, 'tmp')), [], 'the partial file was removed')
  const downloadRes = await gateway.fetch(`/api/tasks/${id}/download`)
  assert.equal(downloadRes.status, 409)
})

test('a queued task cancelled before it runs never runs', async () => {
  const [row] = await db.sql`insert into sluice.tasks (kind, dataset, params, run_after) values ('export', 'people', '{"query": [], "gzip": false}', now() + interval '1 hour') returning id`
  const cancel = await gateway.fetch(`/api/tasks/${row!.id}/cancel`, { method: 'POST' })
  assert.equal(((await cancel.json()) as TaskJson).state, 'cancelled')
  const [after] = await db.sql`select state, attempts from sluice.tasks where id = ${row!.id}`
  assert.deepEqual({ ...after }, { state: 'cancelled', attempts: 0 })
})

test('GET /api/tasks lists recent tasks, newest first', async () => {
  const res = await gateway.fetch('/api/tasks')
  const tasks = (await res.json()) as TaskJson[]
  assert.ok(tasks.length >= 3)
  assert.ok(tasks.every((t) => typeof t.id === 'string' && typeof t.state === 'string'))
  const created = tasks.map((t) => Date.parse((t as unknown as { createdAt: string }).createdAt))
  assert.deepEqual(created, [...created].sort((a, b) => b - a))
})

/** Encodes values the way a browser or curl would, keeping the `=`, `&` structure. */
function encodeQuery(query: string): string {
  return query.split('&').map((pair) => {
    const eq = pair.indexOf('=')
    if (eq < 0) return pair
    return `${pair.slice(0, eq)}=${encodeURIComponent(decodeURIComponentSafe(pair.slice(eq + 1)))}`
  }).join('&')
}

function decodeURIComponentSafe(s: string) {
  try {
    return decodeURIComponent(s)
  } catch {
    return s
  }
}
