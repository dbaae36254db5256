// The two-step import through the API: upload, preview (how the file will be read, with
// every reading option), then import the upload. Also the preview page's reading form.
import assert from 'node:assert/strict'
import { rm } from 'node:fs/promises'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import iconv from 'iconv-lite'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { signInWithForm, startTestGateway, waitForTask, type TaskJson, type TestGateway } from './support/gateway.ts'

let db: TestDatabase
let gateway: TestGateway

// A statistics-portal export: a title block padded with delimiters, a header, rows, and a
// footer of notes after a blank line. Windows-1252 (ü), CRLF.
const REPORT = Buffer.from([
  'Table 12411-0006: Population by state;;',
  'Source: Federal Statistical Office;;',
  ';;',
  'state;year;population',
  'Baden-Württemberg;2022;11280257',
  'Bayern;2022;13369393',
  'Berlin;2022;3755251',
  ';;',
  'Notes: provisional figures;;',
  '© Statistisches Bundesamt, 2024;;',
].join('\r\n') + '\r\n', 'latin1')

// A Russian customer list saved by Excel on Windows: windows-1251, which KOI8-R also decodes
// (every byte is a letter in both), only as gibberish.
const NAMES = ['Иванов Сергей', 'Смирнова Ольга', 'Кузнецов Дмитрий', 'Попова Анна', 'Васильев Алексей', 'Соколова Екатерина', 'Фёдоров Игорь']
const CITIES = ['Москва', 'Санкт-Петербург', 'Новосибирск', 'Екатеринбург', 'Казань', 'Нижний Новгород']
const NOTES = ['оплачено', 'ожидает отправки', 'клиент просит возврат', 'адрес изменён', 'новый клиент']
const CUSTOMERS = Array.from({ length: 200 }, (_, i) => [String(i + 1), NAMES[i % NAMES.length]!, CITIES[i % CITIES.length]!, NOTES[i % NOTES.length]!])
const CUSTOMERS_1251 = iconv.encode(['id;name;city;note', ...CUSTOMERS.map((r) => r.join(';'))].join('\r\n') + '\r\n', 'windows-1251')

type PreviewJson = {
  upload: { id: string; dataset: string; size: number }
  dialect: { encoding: string; encodingAlternatives: string[]; delimiter: string; quote: string | null; skipLines: number; header: boolean; footerLines: number; comment: string | null }
  reasons: string[]
  columns: { index: number; name: string; renamed: boolean; hasValues: boolean; target: string | null }[]
  head: { line: number | null; use: string; text: string }[]
  tail: { line: number | null; use: string; text: string }[]
  rows: { line: number; fields: string[]; problem: string | null }[]
  error: string | null
}

before(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create table population (state text primary key, year int not null, population bigint)`)
  await db.sql.unsafe(`create table customers (id int primary key, name text not null, city text, note text)`)
  gateway = await startTestGateway(db.url)
})

after(async () => {
  await gateway?.stop()
  await db?.drop()
})

async function upload(bytes: Buffer, dataset = 'population', headers: Record<string, string> = {}): Promise<{ id: string; preview: string; imports: string }> {
  const res = await gateway.fetch(`/api/datasets/${dataset}/uploads`, { method: 'POST', body: bytes, headers: { 'Content-Type': 'text/csv', ...headers } })
  const body = (await res.json()) as { id: string; preview: string; imports: string }
  assert.equal(res.status, 201, JSON.stringify(body))
  assert.equal(res.headers.get('location'), `/api/uploads/${body.id}`)
  return body
}

async function preview(id: string, query = '', headers: Record<string, string> = {}): Promise<{ status: number; body: PreviewJson & { code?: string; error: string | null } }> {
  const res = await gateway.fetch(`/api/uploads/${id}${query ? `?${query}` : ''}`, { headers })
  return { status: res.status, body: (await res.json()) as PreviewJson & { code?: string; error: string | null } }
}

describe('upload, preview, import', () => {
  test('the preview says where the table is, and why, before anything loads', async () => {
    const { id } = await upload(REPORT)
    const { status, body } = await preview(id)
    assert.equal(status, 200, JSON.stringify(body))
    assert.equal(body.dialect.encoding, 'windows-1252')
    assert.equal(body.dialect.delimiter, ';')
    assert.equal(body.dialect.skipLines, 3)
    assert.equal(body.dialect.header, true)
    assert.equal(body.dialect.footerLines, 3)
    assert.deepEqual(body.head.map((l) => [l.line, l.use]), [[1, 'skipped'], [2, 'skipped'], [3, 'skipped'], [4, 'header'], [5, 'data'], [6, 'data'], [7, 'data']])
    assert.equal(body.head[0]!.text, 'Table 12411-0006: Population by state;;')
    assert.deepEqual(body.tail.filter((l) => l.use === 'footer').map((l) => [l.line, l.text]), [[8, ';;'], [9, 'Notes: provisional figures;;'], [10, '© Statistisches Bundesamt, 2024;;']])
    assert.deepEqual(body.columns.map((c) => [c.name, c.target]), [['state', 'state'], ['year', 'year'], ['population', 'population']])
    assert.deepEqual(body.rows.map((r) => r.fields[0]), ['Baden-Württemberg', 'Bayern', 'Berlin'])
    assert.ok(body.reasons.some((r) => /^lines 1-3 /.test(r)), body.reasons.join(' | '))
    assert.ok(body.reasons.some((r) => /footer/.test(r)), body.reasons.join(' | '))
    // Nothing was queued or loaded by looking.
    assert.deepEqual([...await db.sql`select count(*)::int as n from population`], [{ n: 0 }])
  })

  test('reading options change the preview; load options are refused there', async () => {
    const { id } = await upload(REPORT)
    const none = await preview(id, 'skipFooter=none')
    assert.equal(none.body.dialect.footerLines, 0)
    assert.deepEqual(none.body.tail.filter((l) => l.use === 'footer'), [])
    const skipped = await preview(id, 'skipLines=4&header=false')
    assert.equal(skipped.body.dialect.skipLines, 4)
    assert.equal(skipped.body.rows[0]!.fields[0], 'Baden-Württemberg')
    assert.equal(skipped.body.rows[0]!.line, 5)
    const latin = await preview(id, 'encoding=utf-8')
    assert.equal(latin.body.dialect.encoding, 'utf-8')
    assert.match(latin.body.rows[0]!.problem ?? '', /^byte 0xFC is not valid utf-8/)

    const refused = await preview(id, 'mode=upsert')
    assert.equal(refused.status, 400)
    assert.match(refused.body.error ?? '', /"mode" is an import option/)
    const bad = await preview(id, 'skipLines=-1')
    assert.equal(bad.status, 400)
    assert.match(bad.body.error ?? '', /skipLines must be a number of lines/)
  })

  test('importing the upload loads the table only, and every line is accounted for', async () => {
    const { id, imports } = await upload(REPORT)
    const res = await fetch(imports, { method: 'POST', headers: { Authorization: `Bearer ${gateway.adminToken}` } })
    const queued = (await res.json()) as TaskJson
    assert.equal(res.status, 202, JSON.stringify(queued))
    const task = (await waitForTask(gateway, queued.id)) as TaskJson & { details: { lines: Record<string, unknown>; rows: number } }
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.deepEqual(await db.sql`select state, year, population::text from population order by state`.then((r) => r.map((x) => Object.values(x))),
      [['Baden-Württemberg', 2022, '11280257'], ['Bayern', 2022, '13369393'], ['Berlin', 2022, '3755251']])
    assert.deepEqual(task.details.lines, {
      total: 10, sepLine: 0, skipped: 3, header: 1, blank: 0, comment: 0, footer: 3, loaded: 3, failed: 0, skippedRange: '1-3', footerRange: '8-10',
    })
    assert.equal((await preview(id)).status, 200, 'the upload can be previewed again after its import')
    await db.sql`delete from population`
  })

  test("someone else's upload is not found; an expired one is gone", async () => {
    const created = await gateway.fetch('/api/tokens', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'other', role: 'user' }) })
    const other = (await created.json()) as { token: string }
    const { id } = await upload(REPORT)
    const asOther = { Authorization: `Bearer ${other.token}` }
    assert.equal((await preview(id, '', asOther)).status, 404)
    assert.equal((await gateway.fetch(`/api/uploads/${id}/imports`, { method: 'POST', headers: asOther })).status, 404)
    assert.equal((await preview('not-a-uuid')).status, 404)

    const [row] = await db.sql`select storage_key from sluice.uploads where id = ${id}`
    await rm(path.join(gateway.storageDir, row!.storage_key as string))
    const expired = await preview(id)
    assert.equal(expired.status, 410)
    assert.equal(expired.body.code, 'UPLOAD_EXPIRED')
    assert.equal((await gateway.fetch(`/api/uploads/${id}/imports`, { method: 'POST' })).status, 410)
  })
})

describe('a legacy code page', () => {
  test('the preview names the detected encoding and why, another encoding reads the file again, and the import loads the text', async () => {
    const { id, imports } = await upload(CUSTOMERS_1251, 'customers')
    const detected = await preview(id)
    assert.equal(detected.status, 200, JSON.stringify(detected.body))
    assert.equal(detected.body.dialect.encoding, 'windows-1251')
    assert.match(detected.body.reasons[0]!, /^encoding windows-1251: no valid UTF-8; decodes strictly as windows-1251 and reads as Cyrillic text/)
    assert.ok(detected.body.dialect.encodingAlternatives.includes('koi8-r'), detected.body.dialect.encodingAlternatives.join())
    assert.deepEqual(detected.body.rows.slice(0, 3).map((r) => r.fields), CUSTOMERS.slice(0, 3))
    assert.ok(detected.body.rows.every((r) => r.problem === null))

    const koi8 = await preview(id, 'encoding=koi8-r')
    assert.equal(koi8.status, 200, JSON.stringify(koi8.body))
    assert.equal(koi8.body.dialect.encoding, 'koi8-r')
    assert.match(koi8.body.reasons[0]!, /^encoding koi8-r: as chosen \(encoding=koi8-r\); detection would read the file as windows-1251/)
    assert.equal(koi8.body.dialect.encodingAlternatives[0], 'windows-1251', 'the detected reading stays on offer')
    const asKoi8 = (text: string) => iconv.decode(iconv.encode(text, 'windows-1251'), 'koi8-r')
    assert.deepEqual(koi8.body.rows[0]!.fields, CUSTOMERS[0]!.map(asKoi8))
    assert.notDeepEqual(koi8.body.rows[0]!.fields, CUSTOMERS[0])

    const res = await fetch(imports, { method: 'POST', headers: { Authorization: `Bearer ${gateway.adminToken}` } })
    const queued = (await res.json()) as TaskJson
    assert.equal(res.status, 202, JSON.stringify(queued))
    const task = (await waitForTask(gateway, queued.id)) as TaskJson & { details: { dialect: { encoding: string; reasons: string[] } } }
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.equal(task.details.dialect.encoding, 'windows-1251')
    assert.match(task.details.dialect.reasons[0]!, /^encoding windows-1251: /)
    const loaded = await db.sql`select id, name, city, note from customers order by id`
    assert.deepEqual(loaded.map((r) => [String(r.id), r.name, r.city, r.note]), CUSTOMERS)
  })

  test('the page offers the encodings that also decode the file, and reads it again in the one picked', async () => {
    const { id } = await upload(CUSTOMERS_1251, 'customers')
    const { cookie } = await signInWithForm(gateway)
    const page = await (await gateway.fetchAnonymously(`/uploads/${id}`, { headers: { cookie } })).text()
    assert.match(page, /<li>encoding windows-1251: no valid UTF-8; decodes strictly as windows-1251/)
    const select = /<select name="encoding">([^]*?)<\/select>/.exec(page)?.[1] ?? ''
    assert.match(select, /^<option value="windows-1251" selected="">windows-1251<\/option><optgroup label="also decode this file">[^]*<option value="koi8-r">koi8-r<\/option>[^]*<\/optgroup><optgroup label="others">/)
    assert.match(page, /<td>Иванов Сергей<\/td><td>Москва<\/td>/)

    const params = new URLSearchParams({ encoding: 'koi8-r', 'shown.encoding': 'windows-1251' })
    const again = await (await gateway.fetchAnonymously(`/uploads/${id}?${params}`, { headers: { cookie } })).text()
    assert.match(again, /<option value="koi8-r" selected="">koi8-r<\/option><optgroup label="also decode this file"><option value="windows-1251">windows-1251<\/option>/)
    const koi8Name = iconv.decode(iconv.encode('Иванов Сергей', 'windows-1251'), 'koi8-r')
    assert.ok(again.includes(`<td>${koi8Name}</td>`), 'the rows are shown as KOI8-R reads them')
    assert.match(again, /<input type="hidden" name="encoding" value="koi8-r"\/>/, 'the import form carries the choice')
  })
})

describe('the preview page', () => {
  test('shows the skipped lines, the header and the footer, and keeps only the options the user changed', async () => {
    const { id } = await upload(REPORT)
    const { cookie } = await signInWithForm(gateway)
    const page = await (await gateway.fetchAnonymously(`/uploads/${id}`, { headers: { cookie } })).text()
    assert.match(page, /<tr class="use-skipped"><td class="n">1<\/td><td class="use">skipped<\/td><td>Table 12411-0006: Population by state;;<\/td><\/tr>/)
    assert.match(page, /<tr class="use-header"><td class="n">4<\/td>/)
    assert.match(page, /<tr class="use-footer"><td class="n">10<\/td><td class="use">footer<\/td><td>© Statistisches Bundesamt, 2024;;<\/td><\/tr>/)
    assert.match(page, /<li>lines 1-3 /)
    assert.match(page, /<select name="quote">[^]*<option value="none">none: quotes are text<\/option>/)
    assert.match(page, /name="shown.skipLines" value="3"/)

    // The form sends every field; only the one changed (quote) becomes a choice, carried to the import form.
    const params = new URLSearchParams({ encoding: 'windows-1252', 'shown.encoding': 'windows-1252', quote: 'none', 'shown.quote': '"', skipLines: '3', 'shown.skipLines': '3' })
    const again = await (await gateway.fetchAnonymously(`/uploads/${id}?${params}`, { headers: { cookie } })).text()
    assert.match(again, /<input type="hidden" name="quote" value="none"\/>/)
    assert.doesNotMatch(again, /<input type="hidden" name="skipLines"/)
    assert.doesNotMatch(again, /<input type="hidden" name="encoding"/)
    assert.match(again, /<option value="none" selected="">none: quotes are text<\/option>/)

    const refused = await gateway.fetchAnonymously(`/uploads/${id}?skipLines=lots`, { headers: { cookie } })
    assert.equal(refused.status, 200, 'a choice the import would refuse is shown with its reason, and the file as detected')
    assert.match(await refused.text(), /skipLines must be a number of lines from 0 to 10000/)
  })
})
