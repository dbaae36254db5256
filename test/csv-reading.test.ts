import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'
import vm from 'node:vm'
import iconv from 'iconv-lite'
import {
  detectDialect, readRecords, SAMPLE_BYTES,
  type CsvRecord, type Dialect, type DialectOverrides, type LineAccount, type ReadOptions,
  newLineAccount,
} from '../src/imports/index.ts'

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const corpusRoot = path.resolve(repoRoot, 'test/fixtures/corpus')

type ManifestEntry = {
  file: string
  encoding: string | null
  bom: boolean | null
  delimiter: string | null
  lineEnding: string | null
  header: boolean | null
  expected: string | null
}
const manifest: ManifestEntry[] = JSON.parse(fs.readFileSync(path.join(corpusRoot, 'manifest.json'), 'utf8'))

// Dialects the source declares and the bytes cannot reveal, passed the way a user would choose them.
// frictionless-py/dialect.csv: its test declares delimiter "|", quoteChar "#", escapeChar "-"
// (an escape that also works outside quotes); nothing in three short lines shows "#" is a quote.
const DECLARED: Record<string, DialectOverrides> = {
  'files/frictionless-py/dialect.csv': { delimiter: '|', quote: '#', escape: '-' },
}

const corpusPath = (file: string) => path.join(corpusRoot, file)

function sampleOf(file: string): Buffer {
  const fd = fs.openSync(corpusPath(file), 'r')
  try {
    const sample = Buffer.alloc(SAMPLE_BYTES)
    return sample.subarray(0, fs.readSync(fd, sample, 0, SAMPLE_BYTES, 0))
  } finally {
    fs.closeSync(fd)
  }
}

/** What an import does: detect from the first bytes, then stream the file from disk. */
async function importCorpusFile(file: string, chunkSize = 64 * 1024, account?: LineAccount): Promise<CsvRecord[]> {
  const dialect = detectDialect(sampleOf(file), DECLARED[file] ?? {})
  return collect(readRecords(fs.createReadStream(corpusPath(file), { highWaterMark: chunkSize }), dialect, { account }))
}

async function collect(records: AsyncIterable<CsvRecord>): Promise<CsvRecord[]> {
  const all: CsvRecord[] = []
  for await (const record of records) all.push(record)
  return all
}

async function* chunks(bytes: Buffer, size = bytes.length || 1) {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size)
}

/** Detects on the first SAMPLE_BYTES, as an import does, and reads the bytes back in chunks. */
async function importBytes(bytes: Buffer, overrides: DialectOverrides = {}, options: ReadOptions = {}) {
  const dialect = detectDialect(bytes.subarray(0, SAMPLE_BYTES), overrides)
  const size = bytes.length < 4096 ? 3 : 4096 // small inputs cross every boundary; large ones stay quick
  const records = await collect(readRecords(chunks(bytes, size), dialect, options))
  return { dialect, records, fields: records.map((r) => r.fields), lines: records.map((r) => r.line) }
}

async function importFailure(bytes: Buffer, overrides: DialectOverrides = {}, options: ReadOptions = {}) {
  return importBytes(bytes, overrides, options).then(
    () => assert.fail('expected the import to fail'),
    (err: Error & { code?: string; line?: number }) => err,
  )
}

// Latin-1 and windows-1252 are one answer where no byte falls in 0x80-0x9F (corpus README).
function assertSameEncoding(actual: string, expected: string, bytes: Buffer) {
  const western = new Set(['iso-8859-1', 'windows-1252'])
  const hasC1 = bytes.some((b) => b >= 0x80 && b <= 0x9f)
  if (western.has(actual) && western.has(expected) && !hasC1) return
  assert.equal(actual, expected)
}

describe('corpus: detection agrees with the manifest', () => {
  for (const entry of manifest) {
    test(entry.file, () => {
      const sample = sampleOf(entry.file)
      const dialect = detectDialect(sample) // no overrides: every stated value is visible in the bytes
      if (entry.encoding !== null) assertSameEncoding(dialect.encoding, entry.encoding, sample)
      if (entry.delimiter !== null) assert.equal(dialect.delimiter, entry.delimiter)
      if (entry.header !== null) assert.equal(dialect.header, entry.header)
      if (entry.bom !== null) assert.equal(dialect.bom, entry.bom)
      if (entry.lineEnding !== null) assert.equal(dialect.lineEnding, entry.lineEnding)
    })
  }
})

describe('corpus: files with expected records parse to exactly those', () => {
  for (const entry of manifest.filter((e) => e.expected !== null)) {
    test(entry.file, async () => {
      const expected = JSON.parse(fs.readFileSync(path.join(corpusRoot, entry.expected!), 'utf8'))
      assert.deepEqual((await importCorpusFile(entry.file)).map((r) => r.fields), expected)
      assert.deepEqual((await importCorpusFile(entry.file, 1)).map((r) => r.fields), expected, 'read byte by byte')
    })
  }
})

describe('corpus: what the notes state', () => {
  test('no file crashes or hangs: each reads to the end or fails with a coded error', { timeout: 20_000 }, async () => {
    for (const { file } of manifest) {
      const records = await importCorpusFile(file).catch((err) => {
        assert.ok(typeof err.code === 'string' && /^line \d+: /.test(err.message), `${file}: ${err.stack}`)
        return []
      })
      assert.ok(records.every((r) => r.line >= 1 && r.fields.length >= 1), file)
    }
  })

  test('imdb.csv: backslash-escaped commas, no quote character, 44 fields everywhere', async () => {
    const dialect = detectDialect(sampleOf('files/clevercsv/imdb.csv'))
    assert.equal(dialect.quote, null)
    assert.equal(dialect.escape, '\\')
    const records = await importCorpusFile('files/clevercsv/imdb.csv')
    assert.equal(records.length, 101)
    assert.ok(records.every((r) => r.fields.length === 44))
    const seltsam = records.find((r) => r.line === 66)
    assert.equal(seltsam?.fields[2], 'Dr. Seltsam, oder wie ich lernte, die Bombe zu lieben (1964)')
  })

  test('milk.csv and doublequote.csv: the same field count in every record', async () => {
    const account = newLineAccount()
    const milk = await importCorpusFile('files/clevercsv/milk.csv', undefined, account)
    assert.ok(milk.every((r) => r.fields.length === 23))
    assert.equal(milk.at(-1)!.fields[0], 'Jun-15', 'the last data row; the numbered notes below it are the footer')
    assert.ok(milk.every((r) => !r.fields.some((f) => f.includes('"Information"'))), 'no footnote is loaded as a row')
    assert.equal(account.footer, 9)
    assert.equal(account.total, account.header + account.records + account.footer + account.blank)
    const doubled = await importCorpusFile('files/frictionless-py/doublequote.csv')
    assert.ok(doubled.every((r) => r.fields.length === 17))
  })

  test('airedale.csv: the note after a blank CRLF line is the footer, counted by its lines', async () => {
    const account = newLineAccount()
    const records = await importCorpusFile('files/clevercsv/airedale.csv', undefined, account)
    assert.ok(records.every((r) => r.fields.length === 8 && !r.fields[0]!.startsWith('Report created')))
    assert.equal(account.footer, 2, 'the blank line and "Report created October 10 - RX7 RWW"')
    assert.equal(account.total, records.at(-1)!.line + 2)
  })

  test('blank-rows.csv: ",," is a blank line (only delimiters), skipped and counted', async () => {
    const account = newLineAccount()
    const records = await importCorpusFile('files/frictionless-py/blank-rows.csv', undefined, account)
    assert.ok(records.every((r) => r.fields.some((f) => f !== '')))
    assert.ok(account.blank >= 1)
    assert.equal(account.total, account.header + account.records + account.blank + account.footer)
  })

  test('411.csv: a trailing empty field beyond the header is trimmed', async () => {
    const records = await importCorpusFile('files/node-csv/411.csv')
    assert.ok(records.every((r) => r.fields.length === 5))
    assert.equal(records[2]!.raw, '2,Kylie,Lauderdale,klauderdale1@wsj.com,2022-02-14,')
  })

  test('without-headers-extra.csv: ragged rows come back as they are', async () => {
    const records = await importCorpusFile('files/frictionless-py/without-headers-extra.csv')
    assert.deepEqual(records.map((r) => r.fields.length), [2, 2, 3])
  })

  test('non-UTF-8 files decode to the right characters', async () => {
    const greek = await importCorpusFile('files/frictionless-py/table-infer-iso-8859-7.csv')
    assert.equal(greek[1]!.fields[2], 'Λεωνιδας')
    const accents = await importCorpusFile('files/frictionless-py/table-with-accents.csv')
    assert.equal(accents[0]!.fields[3], 'Année')
    const utf16 = await importCorpusFile('files/node-csv/365-utf16le-bom-windows.csv')
    assert.deepEqual(utf16.map((r) => r.fields), [['a', 'b', 'c'], ['1', '2', '3']])
  })
})

describe('encodings', () => {
  const text = 'name,city\nMüller,Zürich\n"Garçon, fils",Besançon\n'
  const expected = [['name', 'city'], ['Müller', 'Zürich'], ['Garçon, fils', 'Besançon']]
  const cases: [string, Buffer, string, boolean][] = [
    ['utf-8', Buffer.from(text), 'utf-8', false],
    ['utf-8 with BOM', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)]), 'utf-8', true],
    ['utf-16le with BOM', Buffer.concat([Buffer.from([0xff, 0xfe]), iconv.encode(text, 'utf-16le')]), 'utf-16le', true],
    ['utf-16be with BOM', Buffer.concat([Buffer.from([0xfe, 0xff]), iconv.encode(text, 'utf-16be')]), 'utf-16be', true],
    // No byte in 0x80-0x9F: windows-1252 decodes Latin-1 identically, and is right if € turns up later.
    ['latin-1', iconv.encode(text, 'latin1'), 'windows-1252', false],
  ]
  for (const [label, bytes, encoding, bom] of cases) {
    test(`${label} is detected and decoded`, async () => {
      const { dialect, fields } = await importBytes(bytes)
      assert.equal(dialect.encoding, encoding)
      assert.equal(dialect.bom, bom)
      assert.deepEqual(fields, expected)
    })
  }

  test('windows-1252 with € and smart quotes', async () => {
    const bytes = iconv.encode('item;price\n“Smart” café;€5\nnaïve – test;€7,50\n', 'windows-1252')
    const { dialect, fields } = await importBytes(bytes)
    assert.equal(dialect.encoding, 'windows-1252')
    assert.deepEqual(fields, [['item', 'price'], ['“Smart” café', '€5'], ['naïve – test', '€7,50']])
  })

  test('a sample that cuts a UTF-8 character in half is still UTF-8', () => {
    const bytes = Buffer.from('a,b\n1,é\n')
    assert.equal(detectDialect(bytes.subarray(0, bytes.length - 2)).encoding, 'utf-8')
  })

  // A row in another encoding (one Latin-1 name in a UTF-8 file) is that row's problem: it is
  // reported with its line and bytes and fails as a row, and the rest of the file still reads.
  test('invalid UTF-8 makes its row fail with the line and bytes, never silently replaced', async () => {
    const valid = 'id,name\n' + Array.from({ length: 10 }, (_, i) => `${i + 1},café\n`).join('') // lines 1-11
    const bytes = Buffer.concat([Buffer.from(valid + '11,caf'), Buffer.from([0xc3, 0x28]), Buffer.from('\n12,x\n')])
    const { records } = await importBytes(bytes, { encoding: 'utf-8' })
    const bad = records.filter((r) => r.problem !== null)
    assert.deepEqual(bad.map((r) => r.line), [12])
    // 0x28 is "(": the sequence that 0xC3 starts is cut short, and only 0xC3 is invalid (WHATWG).
    assert.equal(bad[0]!.problem, 'byte 0xC3 is not valid utf-8 (shown as \uFFFD): this row is probably in another encoding; fix the row, or choose the file\'s encoding')
    assert.deepEqual(bad[0]!.fields, ['11', 'caf\uFFFD('])
    assert.deepEqual(records.at(-1)!.fields, ['12', 'x'], 'the rows after it still read')
  })

  test('invalid bytes beyond the detection sample make their row fail at its line', async () => {
    const head = 'id,name\n' + 'x,y\n'.repeat(SAMPLE_BYTES / 4)
    const bytes = Buffer.concat([Buffer.from(head), Buffer.from([0xff]), Buffer.from(',z\nlast,row\n')])
    const { records } = await importBytes(bytes)
    const bad = records.filter((r) => r.problem !== null)
    assert.deepEqual(bad.map((r) => r.line), [SAMPLE_BYTES / 4 + 2])
    assert.match(bad[0]!.problem!, /^byte 0xFF is not valid utf-8/)
  })

  test('a UTF-8 sequence cut off by the end of the file is invalid', async () => {
    const { records } = await importBytes(Buffer.concat([Buffer.from('a\nb\n'), Buffer.from([0xe2, 0x82])]), { encoding: 'utf-8' })
    assert.equal(records.at(-1)!.line, 3)
    assert.match(records.at(-1)!.problem!, /^bytes 0xE2 0x82 are not valid utf-8/)
  })

  test('undecodable bytes in skipped lines and the header do not shift the blame to a later row', async () => {
    const bytes = Buffer.concat([Buffer.from('Title \xff\n\nid,n\xe9me\n', 'latin1'), Buffer.from('1,ok\n2,b'), Buffer.from([0xe9]), Buffer.from('d\n3,ok\n')])
    const { records } = await importBytes(bytes, { encoding: 'utf-8', skipLines: 2 })
    assert.deepEqual(records[0]!.fields, ['id', 'n\uFFFDme'])
    assert.deepEqual(records.filter((r) => r.problem !== null).map((r) => r.line), [5])
  })

  test('a literal U+FFFD in UTF-8 is data, not an error', async () => {
    assert.deepEqual((await importBytes(Buffer.from('a\n\uFFFD\n'))).fields, [['a'], ['\uFFFD']])
  })

  test('a byte windows-1252 does not define is reported on its row', async () => {
    const { records } = await importBytes(Buffer.from([0x61, 0x0a, 0x62, 0x81, 0x0a]), { encoding: 'windows-1252' })
    assert.equal(records[1]!.line, 2)
    assert.match(records[1]!.problem!, /^byte 0x81 is not valid windows-1252/)
  })
})

describe('line endings and line numbers', () => {
  for (const [label, eol] of [['\\n', '\n'], ['\\r\\n', '\r\n'], ['lone \\r', '\r']] as const) {
    test(`${label} endings, quoted line breaks included`, async () => {
      const bytes = Buffer.from(['a,b', '"two', 'lines",1', '', 'c,2', '"x', 'y', 'z",3'].join(eol) + eol)
      const { dialect, fields, lines } = await importBytes(bytes)
      assert.equal(dialect.lineEnding, eol)
      assert.deepEqual(fields, [['a', 'b'], [`two${eol}lines`, '1'], ['c', '2'], [`x${eol}y${eol}z`, '3']])
      assert.deepEqual(lines, [1, 2, 5, 6])
    })
  }

  test('mixed endings: \\r\\n inside quotes counts once, blank lines are skipped but counted', async () => {
    const bytes = Buffer.from('a,b\n"x\r\ny",2\r\n\r\n3,4\r5,6\n   \n7,"8\n9"\n10,11')
    const { dialect, records } = await importBytes(bytes)
    assert.equal(dialect.lineEnding, 'mixed')
    assert.deepEqual(records.map((r) => [r.line, r.fields]), [
      [1, ['a', 'b']], [2, ['x\r\ny', '2']], [5, ['3', '4']], [6, ['5', '6']], [8, ['7', '8\n9']], [10, ['10', '11']],
    ])
    assert.equal(records[1]!.raw, '"x\r\ny",2')
  })
})

describe('delimiters, quoting and header', () => {
  for (const delimiter of [',', ';', '\t', '|']) {
    test(`${JSON.stringify(delimiter)} is detected`, async () => {
      const other = delimiter === ',' ? ';' : ','
      const rows = [['id', 'name', 'note'], ['1', `a${other}b`, 'x'], ['2', 'c', `y${other}z${other}w`]]
      const { dialect, fields } = await importBytes(Buffer.from(rows.map((r) => r.join(delimiter)).join('\n')))
      assert.equal(dialect.delimiter, delimiter)
      assert.deepEqual(fields, rows)
    })
  }

  test('an Excel "sep=;" line sets the delimiter and is skipped', async () => {
    const { dialect, records } = await importBytes(Buffer.from('sep=;\r\na;b,c\r\n1;2,5\r\n'))
    assert.equal(dialect.sepLine, true)
    assert.equal(dialect.delimiter, ';')
    assert.deepEqual(records.map((r) => [r.line, r.fields]), [[2, ['a', 'b,c']], [3, ['1', '2,5']]])
  })

  test('quoted delimiters, doubled quotes and stray quotes', async () => {
    const { fields } = await importBytes(Buffer.from('a,b\n"x, ""y""",5" screen\n'))
    assert.deepEqual(fields, [['a', 'b'], ['x, "y"', '5" screen']])
  })

  test('single quotes are recognised when they clearly quote fields', async () => {
    const { dialect, fields } = await importBytes(Buffer.from("id,name\n1,'Smith, J'\n2,'Doe, A'\n3,'Roe, B'\n"))
    assert.equal(dialect.quote, "'")
    assert.deepEqual(fields[1], ['1', 'Smith, J'])
  })

  test('a first row typed like the data is not a header', () => {
    assert.equal(detectDialect(Buffer.from('1,2.5,2024-01-01\n2,3.5,2024-01-02\n')).header, false)
    assert.equal(detectDialect(Buffer.from('id,price,day\n1,2.5,2024-01-01\n')).header, true)
  })

  test('overrides win over detection', async () => {
    const bytes = Buffer.from('a;b,c\n1;2,3\n')
    const { dialect, fields } = await importBytes(bytes, { delimiter: ',', header: false, encoding: 'latin1', quote: null })
    assert.deepEqual([dialect.delimiter, dialect.header, dialect.encoding, dialect.quote], [',', false, 'iso-8859-1', null])
    assert.deepEqual(fields, [['a;b', 'c'], ['1;2', '3']])
  })

  test('unusable overrides are refused with a code', () => {
    assert.throws(() => detectDialect(Buffer.from('a'), { delimiter: ';;' }), { code: 'INVALID_DIALECT' })
    assert.throws(() => detectDialect(Buffer.from('a'), { encoding: 'klingon' }), { code: 'UNSUPPORTED_ENCODING' })
  })

  test('a sample that ends inside a quoted field does not break detection', () => {
    const dialect = detectDialect(Buffer.from('id;text\n1;"a, b"\n2;"c, d"\n3;"cut, in the mid'))
    assert.equal(dialect.delimiter, ';')
  })
})

describe('malformed input and limits', () => {
  test('an unclosed quote is reported at the record it opens in', async () => {
    const err = await importFailure(Buffer.from('a,b\n1,2\n\n3,"abc\n4,5\n'))
    assert.equal(err.code, 'MALFORMED_CSV')
    assert.match(err.message, /^line 4: a quoted field starts in this record and its closing quote is missing/)
  })

  test('an unclosed quote in a file of one-line records stops after 100 lines, suggesting quote=none', async () => {
    const bytes = Buffer.from('a,b\n1,"never closed\n' + 'x,y\n'.repeat(50_000))
    const err = await importFailure(bytes)
    assert.equal(err.code, 'MALFORMED_CSV')
    assert.match(err.message, /^line 2: a quoted field starts on this line and runs over more than 100 lines, .* import with quote=none\.$/)
  })

  test('an unclosed quote in a file with multi-line records stops at the field limit, not at the end of memory', async () => {
    const bytes = Buffer.from('a,b\n"two\nlines",0\n1,"never closed\n' + 'x,y\n'.repeat(50_000))
    const err = await importFailure(bytes, {}, { maxFieldBytes: 10_000 })
    assert.equal(err.code, 'FIELD_TOO_LARGE')
    assert.match(err.message, /^line 4: a field or record is larger than 10000 bytes/)
  })

  test('too many fields in one record', async () => {
    const err = await importFailure(Buffer.from('a,b\n' + ','.repeat(200) + '\n'), {}, { maxFields: 100 })
    assert.equal(err.code, 'TOO_MANY_FIELDS')
    assert.equal(err.line, 2)
  })

  test('the backslash-escape reader has the same limits and errors', async () => {
    const escaped: DialectOverrides = { quote: null, escape: '\\' }
    const tooMany = await importFailure(Buffer.from('a,b\n' + 'x\\,,'.repeat(101) + '\n'), escaped, { maxFields: 100 })
    assert.equal(tooMany.code, 'TOO_MANY_FIELDS')
    const tooLarge = await importFailure(Buffer.from('a\n' + 'y'.repeat(2000)), escaped, { maxFieldBytes: 1000 })
    assert.equal(tooLarge.code, 'FIELD_TOO_LARGE')
    const unclosed = await importFailure(Buffer.from('a,b\n1,"x\n'), { quote: '"', escape: '\\' })
    assert.deepEqual([unclosed.code, unclosed.line], ['MALFORMED_CSV', 2])
  })
})

describe('streaming', () => {
  test('progress counts bytes read and an abort stops the import', async () => {
    const bytes = Buffer.from('a,b\n' + '1,2\n'.repeat(100_000))
    const seen: number[] = []
    const controller = new AbortController()
    const dialect = detectDialect(bytes)
    const reading = (async () => {
      for await (const record of readRecords(chunks(bytes, 100), dialect, {
        signal: controller.signal, onProgress: (n) => seen.push(n),
      })) if (record.line === 500) controller.abort()
    })()
    await assert.rejects(reading, { name: 'AbortError' })
    assert.ok(seen.length > 1 && seen.every((n, i) => n === (i + 1) * 100))
    assert.ok(seen.at(-1)! < bytes.length / 2, `read ${seen.at(-1)} of ${bytes.length} bytes`)
  })

  test('stopping early releases the input, and an empty file has no records', async () => {
    const file = corpusPath('files/clevercsv/milk.csv')
    const stream = fs.createReadStream(file, { highWaterMark: 1024 })
    for await (const record of readRecords(stream, detectDialect(sampleOf('files/clevercsv/milk.csv')))) {
      assert.equal(record.line, 1)
      break
    }
    // Destroying is asynchronous: give a loaded machine up to two seconds.
    for (let waited = 0; !stream.destroyed && waited < 2000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20))
    assert.ok(stream.destroyed, 'the file stream is closed when the reader stops early')
    assert.ok(stream.bytesRead < fs.statSync(file).size, `read ${stream.bytesRead} bytes of ${fs.statSync(file).size}`)
    assert.deepEqual((await importBytes(Buffer.alloc(0))).records, [])
  })

  test('50 MB streams in constant memory', { timeout: 60_000 }, async () => {
    v8.setFlagsFromString('--expose-gc')
    const gc = vm.runInNewContext('gc') as () => void
    const row = (i: number) =>
      `${i},"Doe, Jane ${i}",jane.doe.${i}@example.com,2024-01-${(i % 28) + 1},${i * 1.5},"12 Long St, Springfield",a note\n`
    const total = 50 * 2 ** 20
    let produced = 0
    async function* generate() {
      for (let i = 0; produced < total;) {
        let text = ''
        while (text.length < 64 * 1024) text += row(i++)
        produced += text.length
        yield Buffer.from(text)
      }
    }
    const memory = () => { gc(); const m = process.memoryUsage(); return m.heapUsed + m.arrayBuffers }
    const dialect: Dialect = detectDialect(Buffer.from(`id,name,email,day,amount,address,note\n${row(1)}${row(2)}`))
    const before = memory()
    let peak = before
    let count = 0
    let readAtFirstRecord = 0
    for await (const record of readRecords(generate(), dialect)) {
      if (count++ === 0) readAtFirstRecord = produced
      if (count % 200_000 === 0) peak = Math.max(peak, memory())
      if (count === 2) assert.equal(record.fields[5], '12 Long St, Springfield')
    }
    assert.ok(produced >= total)
    assert.ok(readAtFirstRecord < 2 ** 20, `read ${readAtFirstRecord} bytes before the first record`)
    assert.ok(peak - before < 64 * 2 ** 20, `memory grew by ${((peak - before) / 2 ** 20).toFixed(1)} MB`)
  })
})
