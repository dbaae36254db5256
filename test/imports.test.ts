import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import { gzipSync } from 'node:zlib'
import iconv from 'iconv-lite'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { startTestGateway, waitForTask, type TaskJson, type TestGateway } from './support/gateway.ts'

let db: TestDatabase
let gateway: TestGateway

type ImportTask = TaskJson & {
  report: string | null
  details: { rows: number; inserted: number; updated: number; deleted: number; failed: number; direct: boolean; errors: { line: number; message: string }[]; dialect: { encoding: string; delimiter: string; header: boolean } }
}

before(async () => {
  db = await createTestDatabase()
  gateway = await startTestGateway(db.url, { MAX_UPLOAD_BYTES: '200000' })
})

after(async () => {
  await gateway?.stop()
  await db?.drop()
})

async function freshTable(name: string, ddl: string) {
  await db.sql.unsafe(`drop table if exists ${name} cascade; create table ${name} (${ddl})`)
}

async function upload(dataset: string, body: NonNullable<RequestInit["body"]>, query = '', headers: Record<string, string> = { 'Content-Type': 'text/csv' }): Promise<Response> {
  return gateway.fetch(`/api/datasets/${encodeURIComponent(dataset)}/imports${query ? `?${query}` : ''}`, { method: 'POST', body, headers })
}

async function importFile(dataset: string, body: NonNullable<RequestInit["body"]>, query = '', headers?: Record<string, string>): Promise<ImportTask> {
  const res = await upload(dataset, body, query, headers)
  const created = await res.json()
  assert.equal(res.status, 202, JSON.stringify(created))
  assert.equal(res.headers.get('location'), `/api/tasks/${(created as TaskJson).id}`)
  return (await waitForTask(gateway, (created as TaskJson).id)) as ImportTask
}

const rowsOf = async (query: string) => (await db.sql.unsafe(query).values()).map((r) => r.map((v) => (v === null ? null : String(v))))

describe('reading what people really send', () => {
  before(() => freshTable('words', 'id int primary key, word text, note text'))

  const cases: [string, Buffer][] = [
    ['UTF-8 without BOM, \\n', Buffer.from('id,word,note\n1,café,x\n2,naïve,\n')],
    ['UTF-8 with BOM, \\r\\n', Buffer.from('\uFEFFid,word,note\r\n1,café,x\r\n2,naïve,\r\n')],
    ['UTF-16 LE with BOM', Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('id,word,note\r\n1,café,x\r\n2,naïve,\r\n', 'utf16le')])],
    ['UTF-16 BE with BOM', Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from('id,word,note\n1,café,x\n2,naïve,\n', 'utf16le').swap16()])],
    ['Windows-1252 (Excel on Windows)', iconv.encode('id;word;note\r\n1;café;x\r\n2;naïve;\r\n' + Array.from({ length: 30 }, (_, i) => `${i + 10};Größe für Straße € ${i};déjà vu à la crème brûlée\r\n`).join(''), 'win1252')],
    ['lone \\r line ends', Buffer.from('id,word,note\r1,café,x\r2,naïve,\r')],
    ['mixed line ends and blank lines', Buffer.from('id,word,note\n\n1,café,x\r\n\r\n2,naïve,\r')],
    ['semicolons', Buffer.from('id;word;note\n1;café;x\n2;naïve;\n')],
    ['tabs', Buffer.from('id\tword\tnote\n1\tcafé\tx\n2\tnaïve\t\n')],
    ['pipes', Buffer.from('id|word|note\n1|café|x\n2|naïve|\n')],
    ["Excel's sep= line", Buffer.from('sep=;\r\nid;word;note\r\n1;café;x\r\n2;naïve;\r\n')],
    ['headers in any case with spaces, trailing empty columns', Buffer.from(' ID , Word ,NOTE,,\n1,café,x,,\n2,naïve,,,\n')],
  ]
  for (const [name, bytes] of cases) {
    test(name, async () => {
      await db.sql`delete from words`
      const task = await importFile('words', bytes)
      assert.equal(task.state, 'succeeded', task.error ?? '')
      assert.deepEqual(await rowsOf('select id, word, note from words where id < 10 order by id'), [['1', 'café', 'x'], ['2', 'naïve', null]])
      const extra = name.startsWith('Windows') ? 30 : 0
      assert.equal(task.details.rows, 2 + extra)
      assert.equal(task.details.inserted, 2 + extra)
      if (extra) {
        assert.equal(task.details.dialect.encoding, 'windows-1252')
        assert.deepEqual(await rowsOf('select word from words where id = 10'), [['Größe für Straße € 0']])
      }
    })
  }

  test('detection is reported and can be overridden', async () => {
    await db.sql`delete from words`
    const task = await importFile('words', Buffer.from('1|café|x\n2|naïve|\n'), 'header=false&delimiter=pipe')
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.equal(task.details.dialect.delimiter, '|')
    assert.equal(task.details.dialect.header, false)
    assert.equal(task.details.dialect.encoding, 'utf-8')
    assert.deepEqual(await rowsOf('select id, word from words order by id'), [['1', 'café'], ['2', 'naïve']])
  })

  test('a quoted empty string stays an empty string; an empty field is NULL', async () => {
    await db.sql`delete from words`
    const task = await importFile('words', Buffer.from('id,word,note\n1,"",\n2,x,""\n'), 'onError=skip')
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.deepEqual(await rowsOf('select id, word, note from words order by id'), [['1', '', null], ['2', 'x', '']])
  })

  test('invalid bytes fail their row, reported with its line, never loaded replaced', async () => {
    await db.sql`delete from words`
    const bytes = Buffer.concat([Buffer.from('id,word,note\n1,ok,x\n2,ba'), Buffer.from([0xc3, 0x28]), Buffer.from('d,y\n')])
    const task = await importFile('words', bytes, 'encoding=utf-8')
    assert.equal(task.state, 'failed')
    assert.match(task.error!, /line 3, byte 0xC3 is not valid utf-8 \(shown as \uFFFD\): this row is probably in another encoding; fix the row/)
    assert.deepEqual(await rowsOf('select id from words'), [])
  })
})

describe('validation reports every bad row with its line, column and value', () => {
  before(async () => {
    await db.sql.unsafe(`
      drop table if exists members, teams cascade;
      create type plan as enum ('free', 'pro');
      create table teams (id int primary key);
      insert into teams values (1), (2);
      create table members (
        id int primary key,
        email varchar(20) not null unique,
        signup_date date,
        score numeric(5, 2) check (score >= 0),
        plan plan,
        team_id int references teams (id),
        uid uuid,
        meta jsonb,
        tags text[]
      );
      insert into members (id, email) values (100, 'taken@x.org');
    `)
  })

  const file = [
    'id,email,signup_date,score,plan,team_id,uid,meta,tags',
    '1,a@x.org,2024-01-31,1.5,free,1,0b7e8c36-3f62-4b52-9a3e-8d3c2b1f0a11,"{""a"": 1}","{x,y}"',
    '2,b@x.org,31/02/2024,1,pro,1,,,',
    '3,"multi',
    'line@x.org",2024-02-01,-4,pro,2,,,',
    '4,c@x.org,2024-02-02,abc,gold,9,not-a-uuid,{bad,{unclosed',
    '5,,2024-02-03,1,free,1,,,',
    '6,a@x.org,2024-02-04,1,free,1,,,',
    '100,new@x.org,2024-02-05,1,free,1,,,',
    '7,this-address-is-far-too-long@x.org,2024-02-06,1,free,1,,,',
    '8,ok@x.org,2024-02-07,2,pro,2,,"[]",{}',
  ].join('\r\n') + '\r\n'

  test('onError=abort: nothing is committed, every error is reported', async () => {
    const task = await importFile('members', Buffer.from(file))
    assert.equal(task.state, 'failed')
    assert.equal(task.errorCode, 'ROWS_INVALID')
    assert.match(task.error!, /7 of 9 rows have errors, so nothing was imported/)
    const byLine = new Map(task.details.errors.map((e) => [e.line, e.message]))
    assert.deepEqual([...byLine.keys()], [3, 4, 6, 7, 8, 9, 10])
    assert.match(byLine.get(3)!, /column "signup_date": "31\/02\/2024" is not a date/)
    assert.match(byLine.get(4)!, /breaks the rule members_score_check/, 'line 4 is where the quoted newline starts')
    const line6 = byLine.get(6)!
    for (const part of [/column "score": "abc" is not a number/, /column "plan": "gold" is not one of: free, pro/, /column "uid": "not-a-uuid" is not a UUID/, /column "meta": "\{bad" is not valid JSON/, /column "tags": "\{unclosed" is not a list/]) {
      assert.match(line6, part)
    }
    assert.match(byLine.get(7)!, /column "email" is required but empty/)
    assert.match(byLine.get(8)!, /duplicate key \(email\) = \(a@x\.org\): the same key is on line 2/)
    assert.match(byLine.get(9)!, /a row with \(id\) = \(100\) already exists/)
    assert.match(byLine.get(10)!, /column "email": .* is longer than character varying\(20\) allows/)
    assert.deepEqual(await rowsOf('select id from members order by id'), [['100']], 'nothing was committed')

    const report = await gateway.fetch(new URL(task.report!).pathname)
    assert.equal(report.status, 200)
    const text = await report.text()
    const lines = text.trimEnd().split('\n')
    assert.equal(lines[0], 'id,email,signup_date,score,plan,team_id,uid,meta,tags,line,error')
    assert.ok(text.includes('3,"multi\r\nline@x.org",2024-02-01,-4,pro,2,,,,4,breaks the rule members_score_check'), 'the failing row as the file had it, line where it starts')
  })

  test('a foreign key that points nowhere is reported', async () => {
    const task = await importFile('members', Buffer.from('id,email,team_id\n20,fk@x.org,9\n21,fk2@x.org,2\n'))
    assert.equal(task.state, 'failed')
    assert.match(task.details.errors[0]!.message, /\(team_id\) = \(9\) does not exist in teams \(id\)/)
    assert.equal(task.details.errors[0]!.line, 2)
  })

  test('onError=skip: valid rows load, bad rows are reported', async () => {
    const task = await importFile('members', Buffer.from(file), 'onError=skip')
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.equal(task.details.failed, 7)
    assert.equal(task.details.inserted, 2)
    assert.deepEqual(await rowsOf('select id, email from members order by id'), [['1', 'a@x.org'], ['8', 'ok@x.org'], ['100', 'taken@x.org']])
    assert.ok(task.report)
  })

  test('report cells that a spreadsheet would run as formulas are neutralised', async () => {
    const task = await importFile('members', Buffer.from('id,email,signup_date\n30,=HYPERLINK("x"),nope\n'), 'onError=skip')
    const text = await (await gateway.fetch(new URL(task.report!).pathname)).text()
    assert.match(text, /'=HYPERLINK/)
    assert.doesNotMatch(text, /,=HYPERLINK/)
  })
})

describe('modes', () => {
  before(() => freshTable('stock', 'sku text primary key, qty int not null, label text'))

  test('insert, then upsert counts inserted and updated rows', async () => {
    let task = await importFile('stock', Buffer.from('sku,qty,label\na,1,A\nb,2,B\n'))
    assert.equal(task.details.inserted, 2)
    assert.equal(task.details.direct, true, 'a clean file goes straight to COPY')
    task = await importFile('stock', Buffer.from('sku,qty,label\nb,20,B2\nc,3,C\n'), 'mode=upsert')
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.deepEqual([task.details.inserted, task.details.updated], [1, 1])
    assert.deepEqual(await rowsOf('select sku, qty, label from stock order by sku'), [['a', '1', 'A'], ['b', '20', 'B2'], ['c', '3', 'C']])
  })

  test('upsert reports a key twice in the file instead of a confusing conflict', async () => {
    const task = await importFile('stock', Buffer.from('sku,qty\nd,1\nd,2\n'), 'mode=upsert')
    assert.equal(task.state, 'failed')
    assert.match(task.details.errors[0]!.message, /duplicate key \(sku\) = \(d\): the same key is on line 2/)
    assert.equal(task.details.errors[0]!.line, 3)
  })

  test('dry run validates and counts, and leaves the table untouched', async () => {
    const before = await rowsOf('select sku, qty, label from stock order by sku')
    const task = await importFile('stock', Buffer.from('sku,qty\nb,7\nz,9\n'), 'mode=upsert&dryRun=true')
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.deepEqual([task.details.inserted, task.details.updated], [1, 1])
    assert.deepEqual(await rowsOf('select sku, qty, label from stock order by sku'), before)
  })

  test('replace makes the table exactly the file, in one transaction', async () => {
    const task = await importFile('stock', Buffer.from('sku,qty\nx,1\ny,2\n'), 'mode=replace')
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.equal(task.details.deleted, 3)
    assert.deepEqual(await rowsOf('select sku, qty from stock order by sku'), [['x', '1'], ['y', '2']])
    const failed = await importFile('stock', Buffer.from('sku,qty\nq,notanumber\n'), 'mode=replace')
    assert.equal(failed.state, 'failed')
    assert.deepEqual(await rowsOf('select sku from stock order by sku'), [['x'], ['y']], 'a failed replace keeps the old rows')
  })

  test('columns= maps CSV columns in order, empty skips one', async () => {
    const task = await importFile('stock', Buffer.from('code,ignored,amount\nm,zzz,5\n'), 'columns=sku,,qty')
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.deepEqual(await rowsOf(`select sku, qty, label from stock where sku = 'm'`), [['m', '5', null]])
  })

  test('an unmatched header is an error naming it', async () => {
    const task = await importFile('stock', Buffer.from('sku,qty,colour\nn,1,red\n'))
    assert.equal(task.state, 'failed')
    assert.match(task.error!, /column\(s\) "colour" match no column of stock/)
  })
})

describe('uploads', () => {
  before(() => freshTable('notes', 'id int primary key, body text'))

  test('multipart, raw, .gz and Content-Encoding: gzip bodies all import', async () => {
    const csv = (from: number) => `id,body\n${from},one\n${from + 1},"two, with comma"\n`
    const form = new FormData()
    form.append('file', new Blob([csv(1)], { type: 'text/csv' }), 'notes.csv')
    assert.equal((await importFile('notes', form, '', {})).state, 'succeeded')
    assert.equal((await importFile('notes', csv(3))).state, 'succeeded')
    const gzForm = new FormData()
    gzForm.append('file', new Blob([gzipSync(csv(5))]), 'notes.csv.gz')
    assert.equal((await importFile('notes', gzForm, '', {})).state, 'succeeded')
    assert.equal((await importFile('notes', gzipSync(csv(7)), '', { 'Content-Type': 'text/csv', 'Content-Encoding': 'gzip' })).state, 'succeeded')
    assert.deepEqual((await rowsOf('select id from notes order by id')).flat(), ['1', '2', '3', '4', '5', '6', '7', '8'])
  })

  test('an upload over MAX_UPLOAD_BYTES is a 413 and leaves nothing behind', async () => {
    const uploadsBefore = await db.sql`select count(*)::int as n from sluice.uploads`
    const big = Buffer.alloc(300_000, 'x\n')
    const res = await upload('notes', big)
    assert.equal(res.status, 413)
    assert.match(((await res.json()) as { error: string }).error, /larger than the limit of 200,000 bytes/)
    const uploadsAfter = await db.sql`select count(*)::int as n from sluice.uploads`
    assert.equal(uploadsAfter[0]!.n, uploadsBefore[0]!.n)
    assert.deepEqual(await readdir(path.join(gateway.storageDir, 'tmp')), [])
    // A gzip bomb is stopped the same way: the limit counts inflated bytes.
    const bomb = await upload('notes', gzipSync(Buffer.alloc(5_000_000, 'a')), '', { 'Content-Type': 'text/csv', 'Content-Encoding': 'gzip' })
    assert.equal(bomb.status, 413)
  })

  test('bad options are a 400 before anything is stored', async () => {
    for (const [query, message] of [['mode=merge', /mode must be one of insert, upsert, replace/], ['onError=ignore', /onError must be one of abort, skip/], ['columns=id,nope', /"nope" is not a column of notes/], ['key=body', /only applies to mode=upsert/], ['mode=upsert&key=body', /not the primary key or a unique key/], ['delimiter=ab', /delimiter must be a single character/], ['frobnicate=1', /unknown option "frobnicate"/]] as const) {
      const res = await upload('notes', 'id,body\n1,x\n', query)
      assert.equal(res.status, 400, query)
      assert.match(((await res.json()) as { error: string }).error, message)
    }
    const view = await db.sql`create or replace view notes_view as select * from notes`
    void view
    const res = await upload('notes_view', 'id,body\n1,x\n')
    assert.equal(res.status, 400)
  })
})

test('cancel mid-load leaves nothing half-loaded', async () => {
  await db.sql.unsafe(`
    drop table if exists slow_sink;
    create table slow_sink (id int primary key, v text);
    create function slow_sink_row() returns trigger language plpgsql as $$ begin perform pg_sleep(0.002); return new; end $$;
    create trigger slow_sink_row before insert on slow_sink for each row execute function slow_sink_row();
  `)
  const rows = Array.from({ length: 4000 }, (_, i) => `${i},value ${i}`).join('\n')
  const res = await upload('slow_sink', `id,v\n${rows}\n`)
  const { id } = (await res.json()) as TaskJson
  await waitForTask(gateway, id, (t) => t.state === 'running' && t.progress.bytes > 0)
  await new Promise((r) => setTimeout(r, 1000))
  await gateway.fetch(`/api/tasks/${id}/cancel`, { method: 'POST' })
  const task = await waitForTask(gateway, id)
  assert.equal(task.state, 'cancelled')
  assert.deepEqual(await rowsOf('select count(*) from slow_sink'), [['0']])
})

describe('every corpus file with an expected parse imports to exactly those records', async () => {
  const corpus = path.resolve(import.meta.dirname, 'fixtures/corpus')
  const manifest = JSON.parse(await readFile(path.join(corpus, 'manifest.json'), 'utf8')) as { file: string; expected: string | null; notes: string; delimiter: string; quote: string; escape: string | null }[]
  let n = 0
  for (const entry of manifest.filter((e) => e.expected)) {
    const table = `corpus_${++n}`
    test(entry.file, async () => {
      const expected = JSON.parse(await readFile(path.join(corpus, entry.expected!), 'utf8')) as string[][]
      const width = Math.max(...expected.map((r) => r.length))
      await freshTable(table, ['line_no serial primary key', ...Array.from({ length: width }, (_, i) => `c${i + 1} text`)].join(', '))
      // The one file whose dialect its source declares and the bytes cannot show (see the corpus README).
      const declared = entry.file.endsWith('frictionless-py/dialect.csv') ? `&delimiter=${encodeURIComponent('|')}&quote=${encodeURIComponent('#')}&escape=-` : ''
      const columns = Array.from({ length: expected[0]!.length }, (_, i) => `c${i + 1}`).join(',')
      const task = await importFile(table, await readFile(path.join(corpus, entry.file)), `header=true&onError=skip&columns=${columns}${declared}`)
      assert.equal(task.state, 'succeeded', task.error ?? '')
      const stored = await rowsOf(`select ${Array.from({ length: width }, (_, i) => `coalesce(c${i + 1}, '')`).join(', ')} from ${table} order by line_no`)
      assert.deepEqual(stored, expected.slice(1).map((r) => [...r, ...Array(width - r.length).fill('')]))
    })
  }
})
