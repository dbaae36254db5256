// Issue 10: files as people really send them, imported with no options into a table with
// the file's own columns, the way a new user would. Each class of trouble has a file written
// here in its likeness, beside the six synthetic files of the shared corpus. What must hold
// for every one: the table holds exactly the records in the file as written, and every
// physical line is accounted for (skipped, header, loaded, failed, blank, comment, footer).
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import iconv from 'iconv-lite'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { startTestGateway, waitForTask, type TaskJson, type TestGateway } from './support/gateway.ts'

let db: TestDatabase
let gateway: TestGateway

type Lines = { total: number; sepLine: number; skipped: number; header: number; loaded: number; failed: number; blank: number; comment: number; footer: number; skippedLines?: string | null; footerLines?: string | null }
type ImportTask = TaskJson & {
  details: {
    inserted: number; failed: number; errors: { line: number; message: string }[]; lines: Lines
    dialect: { encoding: string; delimiter: string; quote: string | null; header: boolean; skipLines: number; reasons: string[] }
  }
}

before(async () => {
  db = await createTestDatabase()
  gateway = await startTestGateway(db.url)
})

after(async () => {
  await gateway?.stop()
  await db?.drop()
})

const quoteName = (name: string) => `"${name.replaceAll('"', '""')}"`
let tables = 0

/** A table of text columns with these names (or c1…cN), in this order. */
async function tableWith(columns: string[]): Promise<string> {
  const name = `real_${++tables}`
  await db.sql.unsafe(`create table ${name} (${columns.map((c) => `${quoteName(c)} text`).join(', ')})`)
  return name
}

async function importFile(table: string, body: Buffer, query = ''): Promise<ImportTask> {
  const res = await gateway.fetch(`/api/datasets/${table}/imports${query ? `?${query}` : ''}`, { method: 'POST', body, headers: { 'Content-Type': 'text/csv' } })
  const created = (await res.json()) as TaskJson
  assert.equal(res.status, 202, JSON.stringify(created))
  return (await waitForTask(gateway, created.id)) as ImportTask
}

const stored = async (table: string, columns: string[]) =>
  (await db.sql.unsafe(`select ${columns.map(quoteName).join(', ')} from ${table}`).values()).map((r) => r.map((v) => (v === null ? '' : String(v))))

/** Physical lines as a reader counts them: a final line break ends the last line, it does not start one. */
function physicalLines(text: string): number {
  const breaks = text.match(/\r\n|\r|\n/g)?.length ?? 0
  return /(\r\n|\r|\n)$/.test(text) || text === '' ? breaks : breaks + 1
}

/** The line account's parts add up to the file's lines: the check that makes a swallowed line impossible to miss. */
function assertEveryLineAccounted(task: ImportTask, text: string) {
  const l = task.details.lines
  assert.ok(l, `the task has a line account: ${JSON.stringify(task.details)}`)
  const parts = l.sepLine + l.skipped + l.header + l.loaded + l.failed + l.blank + l.comment + l.footer
  assert.equal(l.total, physicalLines(text), 'the account counts every physical line of the file')
  assert.equal(parts, l.total, `the parts add up: ${JSON.stringify(l)}`)
}

const sortRows = (rows: string[][]) => [...rows].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))

describe('the shared corpus\'s synthetic files load to their expected records with no options', async () => {
  const corpus = path.resolve(import.meta.dirname, 'fixtures/corpus')
  type Entry = { file: string; expected: string; header: boolean; skipLines: number; footerLines: number; comment?: string; encoding: string; delimiter: string; quote: string | null }
  const manifest = (JSON.parse(await readFile(path.join(corpus, 'manifest.json'), 'utf8')) as Entry[]).filter((e) => e.file.startsWith('files/synthetic/'))
  assert.equal(manifest.length, 6)
  for (const entry of manifest) {
    test(path.basename(entry.file), async () => {
      const expected = JSON.parse(await readFile(path.join(corpus, entry.expected), 'utf8')) as string[][]
      const bytes = await readFile(path.join(corpus, entry.file))
      const text = iconv.decode(bytes, entry.encoding)
      const width = Math.max(...expected.map((r) => r.length))
      // The file's own columns; an empty header cell over data gets the name the gateway gives it.
      const columns = entry.header ? expected[0]!.map((name, i) => name || `column_${i + 1}`) : Array.from({ length: width }, (_, i) => `c${i + 1}`)
      const table = await tableWith(columns)
      const task = await importFile(table, bytes, entry.header ? '' : 'header=false')
      assert.equal(task.state, 'succeeded', task.error ?? '')
      const records = entry.header ? expected.slice(1) : expected
      const padded = records.map((r) => [...r, ...Array(columns.length - r.length).fill('')])
      assert.deepEqual(sortRows(await stored(table, columns)), sortRows(padded))
      const d = task.details.dialect
      assert.equal(d.encoding, entry.encoding)
      assert.equal(d.delimiter, entry.delimiter)
      assert.equal(d.quote, entry.quote)
      assert.equal(d.header, entry.header)
      const l = task.details.lines
      assert.equal(l.skipped, entry.skipLines, 'the lines before the table are skipped')
      assert.equal(l.footer, entry.footerLines, 'the lines after it are the footer')
      assert.equal(l.comment, entry.comment ? text.split(/\r?\n/).filter((line) => line.startsWith(entry.comment!)).length : 0)
      assert.equal(l.loaded, records.length)
      assertEveryLineAccounted(task, text)
    })
  }
})

describe('each class of trouble, on files written in its likeness', () => {
  test('a title block above the header, padded with delimiters, and notes below the data', async () => {
    const text = [
      'Table 5.2: Registered unemployed by district,,,',
      'Source: Labour office; provisional figures,,,',
      ',,,',
      'Filter: all ages,,,',
      '',
      'district,month,unemployed,rate',
      'Altstadt,2024-01,1204,5.1',
      'Neustadt,2024-01,877,4.2',
      'Hafen,2024-01,2301,7.9',
      '',
      'Notes:,,,',
      '1) provisional,,,',
      '© Labour office 2024,,,',
      '',
    ].join('\n')
    const columns = ['district', 'month', 'unemployed', 'rate']
    const table = await tableWith(columns)
    const task = await importFile(table, Buffer.from(text))
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.deepEqual(sortRows(await stored(table, columns)), sortRows([['Altstadt', '2024-01', '1204', '5.1'], ['Neustadt', '2024-01', '877', '4.2'], ['Hafen', '2024-01', '2301', '7.9']]))
    const l = task.details.lines
    assert.equal(l.skipped + l.blank, 5, `the five lines above the header are not data: ${JSON.stringify(l)}`)
    assert.equal(l.header, 1)
    assert.equal(l.footer, 4, 'the blank line and the notes below it are footer lines, reported, not loaded')
    assertEveryLineAccounted(task, text)
    assert.ok(task.details.dialect.reasons.some((r) => /line 6|header/i.test(r)), `a reason names the header: ${task.details.dialect.reasons.join(' | ')}`)
  })

  test('a two-line header: the data still loads under the line whose names match', async () => {
    const text = 'Population by region,,\nregion,y2021,y2022\n,persons,persons\nNorth,100,110\nSouth,200,190\n'
    const columns = ['region', 'y2021', 'y2022']
    const table = await tableWith(columns)
    const task = await importFile(table, Buffer.from(text))
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.deepEqual(sortRows(await stored(table, columns)), [['North', '100', '110'], ['South', '200', '190']])
    assertEveryLineAccounted(task, text)
  })

  test('an empty header cell over a column with data: never dropped silently', async () => {
    const text = 'code,name,\n1,Finance,\n2,Health,0800-123\n3,Culture,\n'
    // A table without a place for it: the rows that have a value there fail, by line.
    const narrow = await tableWith(['code', 'name'])
    const refused = await importFile(narrow, Buffer.from(text), 'onError=skip')
    assert.deepEqual(sortRows(await stored(narrow, ['code', 'name'])), [['1', 'Finance'], ['3', 'Culture']])
    assert.equal(refused.details.failed, 1)
    assert.equal(refused.details.errors[0]!.line, 3)
    assert.match(refused.details.errors[0]!.message, /column_3|3rd|third|unnamed/i)
    assertEveryLineAccounted(refused, text)
    // Mapped to nothing on purpose, every row loads without it.
    const onPurpose = await tableWith(['code', 'name'])
    const skipped = await importFile(onPurpose, Buffer.from(text), 'columns=code,name,')
    assert.equal(skipped.state, 'succeeded', skipped.error ?? '')
    assert.equal(skipped.details.inserted, 3)
    // A table with the name the preview shows: it loads there.
    const wide = await tableWith(['code', 'name', 'column_3'])
    const loaded = await importFile(wide, Buffer.from(text))
    assert.equal(loaded.state, 'succeeded', loaded.error ?? '')
    assert.deepEqual(sortRows(await stored(wide, ['code', 'name', 'column_3'])), [['1', 'Finance', ''], ['2', 'Health', '0800-123'], ['3', 'Culture', '']])
  })

  test('a tab-separated dump that never quotes: a lone " is data, no line is swallowed', async () => {
    const rows = Array.from({ length: 400 }, (_, i) => [`id${i}`, i === 7 ? '12" vinyl' : i === 90 ? 'say "hi' : `title ${i}`, i % 5 === 0 ? '"' : `n${i}`])
    const text = `id\ttitle\tnote\n${rows.map((r) => r.join('\t')).join('\n')}\n`
    const columns = ['id', 'title', 'note']
    const table = await tableWith(columns)
    const task = await importFile(table, Buffer.from(text))
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.equal(task.details.dialect.quote, null, 'detection saw that the file does not quote')
    assert.deepEqual(sortRows(await stored(table, columns)), sortRows(rows))
    assert.equal(task.details.lines.loaded, 400)
    assertEveryLineAccounted(task, text)
  })

  test('a lone quote in a comma file that does quote elsewhere stops with the line, never a glued row', async () => {
    const good = Array.from({ length: 300 }, (_, i) => `${i},"name ${i}",x`)
    good.splice(20, 0, '20b,12" single,x')
    const text = `id,name,note\n${good.join('\n')}\n`
    const table = await tableWith(['id', 'name', 'note'])
    const task = await importFile(table, Buffer.from(text))
    const [{ n }] = await db.sql.unsafe(`select count(*)::int as n from ${table}`) as unknown as [{ n: number }]
    if (task.state === 'succeeded') {
      // Read as a character, every record must be there as written.
      assert.equal(n, 301)
      assertEveryLineAccounted(task, text)
    } else {
      assert.equal(n, 0, 'nothing half-loaded')
      assert.match(task.error ?? '', /line 22/)
      assert.match(task.error ?? '', /quote=none/)
    }
  })

  test('no header: a first row of numbers and dates like the rest is data', async () => {
    const text = '17,2024-05-01,3.50\n18,2024-05-02,4.00\n19,2024-05-04,12.25\n'
    const columns = ['c1', 'c2', 'c3']
    const table = await tableWith(columns)
    const task = await importFile(table, Buffer.from(text))
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.equal(task.details.dialect.header, false)
    assert.deepEqual(sortRows(await stored(table, columns)), [['17', '2024-05-01', '3.50'], ['18', '2024-05-02', '4.00'], ['19', '2024-05-04', '12.25']])
    assertEveryLineAccounted(task, text)
  })

  test('comment lines, when asked for, are counted and never loaded', async () => {
    const text = '# exported 2024-06-01\nsensor,value\na,1\n# restart\nb,2\n'
    const columns = ['sensor', 'value']
    const table = await tableWith(columns)
    const task = await importFile(table, Buffer.from(text), 'comment=%23')
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.deepEqual(sortRows(await stored(table, columns)), [['a', '1'], ['b', '2']])
    assert.equal(task.details.lines.comment, 2)
    assertEveryLineAccounted(task, text)
  })

  test('a first line of only delimiters is no header: a clear outcome, never a raw SQL error', async () => {
    const text = ',,\nid,name,city\n1,Ada,Paris\n2,Bo,Oslo\n'
    const columns = ['id', 'name', 'city']
    const table = await tableWith(columns)
    const task = await importFile(table, Buffer.from(text))
    assert.doesNotMatch(task.error ?? '', /syntax error|42601/)
    assert.equal(task.state, 'succeeded', task.error ?? '')
    assert.deepEqual(sortRows(await stored(table, columns)), [['1', 'Ada', 'Paris'], ['2', 'Bo', 'Oslo']])
    assertEveryLineAccounted(task, text)
  })

  test('a UTF-8 file with one Latin-1 name far down: that row fails by line, no mojibake loads', async () => {
    const lines = Array.from({ length: 2500 }, (_, i) => Buffer.from(`${i},Zoë ${i},Köln\n`))
    lines[1799] = Buffer.concat([Buffer.from('1799,'), iconv.encode('Zoë Müller', 'latin1'), Buffer.from(',Köln\n')])
    const bytes = Buffer.concat([Buffer.from('id,name,city\n'), ...lines])
    const columns = ['id', 'name', 'city']
    const table = await tableWith(columns)
    const task = await importFile(table, bytes, 'onError=skip')
    assert.equal(task.details.dialect.encoding, 'utf-8')
    assert.equal(task.details.failed, 1)
    assert.equal(task.details.errors[0]!.line, 1801)
    const rows = await stored(table, columns)
    assert.equal(rows.length, 2499)
    assert.ok(rows.every(([, name, city]) => name!.startsWith('Zoë ') && city === 'Köln'), 'every loaded row reads as written')
    assertEveryLineAccounted(task, bytes.toString('utf8'))
  })

  test('a record wider than the header fails by line; the rest load', async () => {
    const text = 'id,name\n1,Ada,extra\n2,Bo\n'
    const columns = ['id', 'name']
    const table = await tableWith(columns)
    const task = await importFile(table, Buffer.from(text), 'onError=skip')
    assert.deepEqual(await stored(table, columns), [['2', 'Bo']])
    assert.equal(task.details.errors[0]!.line, 2)
    assertEveryLineAccounted(task, text)
  })
})
