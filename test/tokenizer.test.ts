// The streaming tokenizer (src/imports/tokenizer.ts): every rule and limit by hand, then a
// seeded differential fuzz against itself (chunked vs whole) and the old tokenizer (test/support/reference-tokenizer.ts).
// `node --import tsx --test test/tokenizer.test.ts`; TOKENIZER_SEED=<n> replays a fuzz run.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createTokenizer as createOldTokenizer } from './support/reference-tokenizer.ts'
import { createTokenizer, type Quoting, type TokenizedRecord, type TokenLimits } from '../src/imports/tokenizer.ts'

const NO_LIMITS: TokenLimits = { maxFieldBytes: Infinity, maxFields: Infinity, maxRecordLines: Infinity }
const SEMI: Quoting = { delimiter: ';', quote: '"', escape: '"' }
const BACKSLASH: Quoting = { delimiter: ';', quote: '"', escape: '\\' }
const NO_QUOTE: Quoting = { delimiter: ';', quote: null, escape: null }

type Outcome = { records: TokenizedRecord[]; error: string | null }

/** Records are class instances (see tokenizer.ts): compare their own properties only. */
const plain = (records: TokenizedRecord[]) => records.map(({ fields, quotedEmpty, raw, breaks }) => ({ fields, quotedEmpty, raw, breaks }))

/** All records of `chunks` pushed one by one then end(); a failure keeps the records before it. */
function run(chunks: string[], quoting: Quoting = SEMI, limits: Partial<TokenLimits> = {}): Outcome {
  const tokenizer = createTokenizer(quoting, { ...NO_LIMITS, ...limits })
  const records: TokenizedRecord[] = []
  try {
    for (const chunk of chunks) records.push(...tokenizer.push(chunk))
    records.push(...tokenizer.end())
    return { records: plain(records), error: null }
  } catch (err) {
    const { code, completed } = err as { code: string; completed: TokenizedRecord[] }
    assert.ok(Array.isArray(completed), 'a failure carries the records completed in that call')
    records.push(...completed)
    return { records: plain(records), error: code }
  }
}

const fieldsOf = (text: string | string[], quoting: Quoting = SEMI) => {
  const { records, error } = run(typeof text === 'string' ? [text] : text, quoting)
  assert.equal(error, null)
  return records.map((r) => r.fields)
}

const only = (text: string, quoting: Quoting = SEMI): TokenizedRecord => {
  const { records, error } = run([text], quoting)
  assert.equal(error, null)
  assert.equal(records.length, 1)
  return records[0]!
}

const countBreaks = (text: string) => (text.match(/\r\n|\r|\n/g) ?? []).length

function expectFailure(chunks: string[], code: string, quoting: Quoting, limits: Partial<TokenLimits>) {
  const tokenizer = createTokenizer(quoting, { ...NO_LIMITS, ...limits })
  const before: TokenizedRecord[] = []
  for (const [n, chunk] of chunks.entries()) {
    try {
      before.push(...tokenizer.push(chunk))
    } catch (err) {
      assert.equal((err as Error).message, code)
      assert.equal((err as { code: string }).code, code)
      return { pushIndex: n, before, completed: (err as { completed: TokenizedRecord[] }).completed, tokenizer }
    }
  }
  try {
    tokenizer.end()
  } catch (err) {
    assert.equal((err as { code: string }).code, code)
    return { pushIndex: chunks.length, before, completed: (err as { completed: TokenizedRecord[] }).completed, tokenizer }
  }
  assert.fail(`expected ${code}`)
}

describe('tokenizer: records and line breaks', () => {
  test('the delimiter ends a field, each of \\n, \\r and \\r\\n a record; raw keeps the break', () => {
    const { records } = run(['a;b\nc;d\r\ne\rf'])
    assert.deepEqual(records, [
      { fields: ['a', 'b'], quotedEmpty: null, raw: 'a;b\n', breaks: 1 },
      { fields: ['c', 'd'], quotedEmpty: null, raw: 'c;d\r\n', breaks: 1 },
      { fields: ['e'], quotedEmpty: null, raw: 'e\r', breaks: 1 },
      { fields: ['f'], quotedEmpty: null, raw: 'f', breaks: 0 },
    ])
  })

  test('empty fields, a trailing delimiter and blank lines', () => {
    assert.deepEqual(fieldsOf(';;\na;\n\n\r\n\r;b\n'), [['', '', ''], ['a', ''], [''], [''], [''], ['', 'b']])
    const blank = run(['a\n\r\n\nb'])
    assert.deepEqual(blank.records.map((r) => r.raw), ['a\n', '\r\n', '\n', 'b'])
  })

  test('a \\r\\n split across chunks is one break and no empty record', () => {
    const { records } = run(['a;b\r', '\nc\r', '', '\n'])
    assert.deepEqual(records.map((r) => [r.fields, r.raw, r.breaks]), [[['a', 'b'], 'a;b\r\n', 1], [['c'], 'c\r\n', 1]])
    // The \r ends the record even when nothing follows, and when something else does.
    assert.deepEqual(run(['a\r']).records.map((r) => r.raw), ['a\r'])
    assert.deepEqual(run(['a\r', 'b']).records.map((r) => r.raw), ['a\r', 'b'])
    assert.deepEqual(run(['a\r', '\r\n']).records.map((r) => r.raw), ['a\r', '\r\n'])
    assert.deepEqual(run(['"x\r', '\ny"\r', '\n']).records.map((r) => [r.fields, r.raw, r.breaks]), [[['x\r\ny'], '"x\r\ny"\r\n', 2]])
  })

  test('end() gives the last record without a break, nothing after a break, and is repeatable', () => {
    const tokenizer = createTokenizer(SEMI, NO_LIMITS)
    assert.deepEqual(plain(tokenizer.push('a\nb;')), [{ fields: ['a'], quotedEmpty: null, raw: 'a\n', breaks: 1 }])
    assert.deepEqual(plain(tokenizer.end()), [{ fields: ['b', ''], quotedEmpty: null, raw: 'b;', breaks: 0 }])
    assert.deepEqual(tokenizer.end(), [])
    assert.deepEqual(run(['a\n']).records.length, 1)
    assert.deepEqual(run(['']).records, [])
    assert.deepEqual(run([]).records, [])
  })

  test('records split at every possible point read the same', () => {
    const text = 'id;"na;me"\r\n1;"a ""b"" c"\r\n\r\n2;"multi\nline";""\n3;x"y\r'
    const whole = run([text])
    for (let cut = 0; cut <= text.length; cut++) assert.deepEqual(run([text.slice(0, cut), text.slice(cut)]), whole, `cut at ${cut}`)
    assert.deepEqual(run([...text]), whole)
    assert.equal(whole.records.map((r) => r.raw).join(''), text)
  })
})

describe('tokenizer: quotes', () => {
  test('a quoted field may hold the delimiter, line breaks and doubled quotes', () => {
    const r = only('"a;b";"c\r\nd";"say ""hi""";x\n')
    assert.deepEqual(r.fields, ['a;b', 'c\r\nd', 'say "hi"', 'x'])
    assert.equal(r.breaks, 2)
    assert.equal(r.raw, '"a;b";"c\r\nd";"say ""hi""";x\n')
  })

  test('a quote opens a field only at its start; in the middle it is text', () => {
    assert.deepEqual(fieldsOf('a"b;c""d;e"\n'), [['a"b', 'c""d', 'e"']])
    assert.deepEqual(fieldsOf(' "a;b"\n'), [[' "a', 'b"']])
  })

  test('text after the closing quote is kept up to the delimiter', () => {
    assert.deepEqual(fieldsOf('"ab"cd;"x" ;"a"b"c"\n'), [['abcd', 'x ', 'ab"c"']])
    assert.deepEqual(fieldsOf('""x;"a;b"c\n'), [['x', 'a;bc']])
  })

  test('quotedEmpty lists the fields written "", and is null when there are none', () => {
    assert.deepEqual(only('"";a;;"";""""\n').quotedEmpty, [0, 3])
    assert.deepEqual(only('"";x').quotedEmpty, [0])
    assert.deepEqual(only('a;"";').quotedEmpty, [1])
    assert.equal(only('"x";""x;\n').quotedEmpty, null)
    assert.deepEqual(run(['"', '"', ';', '"', '', '"']).records[0]!.quotedEmpty, [0, 1])
  })

  test('another quote character', () => {
    assert.deepEqual(fieldsOf("'a;b';'it''s';\"x\"\n", { delimiter: ';', quote: "'", escape: "'" }), [['a;b', "it's", '"x"']])
  })

  test('with no quote character nothing is quoted', () => {
    assert.deepEqual(fieldsOf('"a;b";""\n', NO_QUOTE), [['"a', 'b"', '""']])
    assert.equal(only('"";x\n', NO_QUOTE).quotedEmpty, null)
  })

  test('a file ending inside quotes fails, after the records before it', () => {
    const failure = expectFailure(['a\n"b;c\n', 'd'], 'CSV_QUOTE_NOT_CLOSED', SEMI, {})
    assert.equal(failure.pushIndex, 2)
    assert.deepEqual(failure.before.map((r) => r.fields), [['a']])
    assert.deepEqual(run(['"a""']).error, 'CSV_QUOTE_NOT_CLOSED')
    assert.deepEqual(run(['"a\\"'], BACKSLASH).error, 'CSV_QUOTE_NOT_CLOSED')
    assert.deepEqual(run(['"a"']).error, null)
  })
})

describe('tokenizer: escapes', () => {
  test('an escape takes the next character literally, outside and inside quotes', () => {
    assert.deepEqual(fieldsOf('a\\;b;"c\\"d";\\"e\\\\\n', BACKSLASH), [['a;b', 'c"d', '"e\\']])
    assert.deepEqual(fieldsOf('"x\\""y\n', BACKSLASH), [['x"y']])
  })

  test('an escaped line break is text and does not end the record, but is a physical line', () => {
    const r = only('a\\\nb;c\\\r\n', BACKSLASH)
    assert.deepEqual(r.fields, ['a\nb', 'c\r'])
    assert.equal(r.raw, 'a\\\nb;c\\\r\n')
    assert.equal(r.breaks, 2)
  })

  test('an escape at the very end is kept', () => {
    assert.deepEqual(fieldsOf('a;b\\', BACKSLASH), [['a', 'b\\']])
    assert.deepEqual(fieldsOf(['a;', '\\'], BACKSLASH), [['a', '\\']])
  })

  test('escape === quote means doubling only; a backslash is then text', () => {
    assert.deepEqual(fieldsOf('a\\;"b\\""";c\n'), [['a\\', 'b\\"', 'c']])
  })

  test('an escape without quoting', () => {
    assert.deepEqual(fieldsOf('a\\;b;"c\n', { delimiter: ';', quote: null, escape: '\\' }), [['a;b', '"c']])
  })
})

describe('tokenizer: limits', () => {
  test('a field or a record longer than maxFieldBytes fails with the records before it', () => {
    const long = expectFailure(['ok;1\nfine\n' + 'x'.repeat(11) + '\nnot reached\n'], 'CSV_MAX_RECORD_SIZE', SEMI, { maxFieldBytes: 10 })
    assert.deepEqual(long.completed.map((r) => r.fields), [['ok', '1'], ['fine']])
    // The limit is on the raw text without its line break; exactly the limit passes.
    assert.equal(run(['x'.repeat(10) + '\r\n'], SEMI, { maxFieldBytes: 10 }).error, null)
    assert.equal(run(['"xxxxxxxx"\r\n'], SEMI, { maxFieldBytes: 10 }).error, null)
    assert.equal(run(['"xxxxxxxxx"\r\n'], SEMI, { maxFieldBytes: 10 }).error, 'CSV_MAX_RECORD_SIZE')
    assert.equal(run(['a;b;c;d;e;f\n'], SEMI, { maxFieldBytes: 10 }).error, 'CSV_MAX_RECORD_SIZE')
    // A record over the limit fails in the push that exceeds it, not at its end.
    const spanning = expectFailure(['a\n', 'xxxxx', 'xxxxx', 'x', 'x\n'], 'CSV_MAX_RECORD_SIZE', SEMI, { maxFieldBytes: 10 })
    assert.equal(spanning.pushIndex, 3)
    assert.deepEqual(spanning.before.map((r) => r.fields), [['a']])
    assert.deepEqual(spanning.completed, [])
  })

  test('more than maxFields fields fails; exactly maxFields passes', () => {
    assert.equal(run(['a;b;c\n'], SEMI, { maxFields: 3 }).error, null)
    assert.equal(run(['a;b;c;\n'], SEMI, { maxFields: 3 }).error, 'CSV_TOO_MANY_FIELDS')
    assert.equal(run(['a;b;c;d'], SEMI, { maxFields: 3 }).error, 'CSV_TOO_MANY_FIELDS')
    const failure = expectFailure(['1;2\n3\n"a";"b";"c";"d"\n'], 'CSV_TOO_MANY_FIELDS', SEMI, { maxFields: 3 })
    assert.deepEqual(failure.completed.map((r) => r.fields), [['1', '2'], ['3']])
  })

  test('a field-count bomb fails fast without building the array', () => {
    const bomb = ';'.repeat(5_000_000)
    const started = performance.now()
    assert.equal(run([bomb + '\n'], SEMI, { maxFields: 10_000 }).error, 'CSV_TOO_MANY_FIELDS')
    assert.equal(run([bomb.slice(0, 1000), bomb, '\n'], SEMI, { maxFields: 10_000 }).error, 'CSV_TOO_MANY_FIELDS')
    assert.ok(performance.now() - started < 2000)
  })

  test('a record over maxRecordLines breaks fails as soon as the break over is read', () => {
    const lines = ['a\n', '"runaway\n', ...Array.from({ length: 300 }, (_, i) => `line ${i}\n`)]
    const failure = expectFailure(lines, 'CSV_RECORD_TOO_MANY_LINES', SEMI, { maxRecordLines: 100 })
    assert.equal(failure.pushIndex, 101) // the chunk with the record's 101st line break
    assert.deepEqual(failure.before.map((r) => r.fields), [['a']])
    // Exactly maxRecordLines breaks, the final one included, pass; \r\n is one break.
    const ok = '"' + 'x\r\n'.repeat(99) + 'y"\r\n'
    assert.equal(run([ok], SEMI, { maxRecordLines: 100 }).error, null)
    assert.equal(run([ok], SEMI, { maxRecordLines: 99 }).error, 'CSV_RECORD_TOO_MANY_LINES')
    assert.equal(run(['a\\\nb\\\nc\n'], BACKSLASH, { maxRecordLines: 2 }).error, 'CSV_RECORD_TOO_MANY_LINES')
    assert.equal(run(['a\\\nb\n'], BACKSLASH, { maxRecordLines: 2 }).error, null)
    assert.equal(run(['a\nb\n\n'], SEMI, { maxRecordLines: 1 }).error, null) // one line each
  })

  test('records completed in the failing push travel on the error', () => {
    const failure = expectFailure(['h1;h2\n', 'r1;x\r', '\nr2;y\n"open\n\n\n'], 'CSV_RECORD_TOO_MANY_LINES', SEMI, { maxRecordLines: 2 })
    assert.equal(failure.pushIndex, 2)
    assert.deepEqual(failure.before.map((r) => r.fields), [['h1', 'h2']])
    // r1 was held for the \n that could follow its \r: it completes in the failing push.
    assert.deepEqual(failure.completed.map((r) => [r.fields, r.raw]), [[['r1', 'x'], 'r1;x\r\n'], [['r2', 'y'], 'r2;y\n']])
  })

  test('after a failure the tokenizer throws the same error again, with nothing completed', () => {
    const { tokenizer } = expectFailure(['a\nb;c;d\n'], 'CSV_TOO_MANY_FIELDS', SEMI, { maxFields: 2 })
    for (const call of [() => tokenizer.push('x\n'), () => tokenizer.end()]) {
      assert.throws(call, (err: { code: string; completed: unknown[] }) => err.code === 'CSV_TOO_MANY_FIELDS' && err.completed.length === 0)
    }
  })
})

// ---- differential fuzz ----

const SEED = Number(process.env.TOKENIZER_SEED ?? 20240611)
const QUOTINGS: Quoting[] = [
  { delimiter: ',', quote: '"', escape: '"' },
  { delimiter: ';', quote: '"', escape: '\\' },
  { delimiter: ';', quote: "'", escape: "'" },
  { delimiter: ',', quote: null, escape: null },
  { delimiter: ',', quote: null, escape: '\\' },
  { delimiter: '\t', quote: '"', escape: null },
]
const ALPHABET = ['a', 'b', 'é', ',', ';', '\t', '"', '"', "'", '\\', '\r', '\n', '\r\n', ' ']

function mulberry32(seed: number) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function randomText(rand: () => number): string {
  const n = Math.floor(rand() * rand() * 60)
  let text = ''
  for (let i = 0; i < n; i++) text += ALPHABET[Math.floor(rand() * ALPHABET.length)]
  return text
}

function randomChunks(text: string, rand: () => number): string[] {
  const mode = Math.floor(rand() * 3)
  if (mode === 0) return text.split('') // 1-char chunks
  const chunks: string[] = []
  for (let at = 0; at < text.length;) {
    const size = mode === 1 ? 1 + Math.floor(rand() * 4) : Math.floor(rand() * (text.length + 1)) // 0: an empty push
    chunks.push(text.slice(at, at + size))
    at += size
  }
  return chunks
}

function runOld(chunks: string[], quoting: Quoting): { records: { record: string[]; raw: string }[]; error: string | null } {
  const tokenizer = createOldTokenizer(quoting, { maxFieldBytes: Infinity, maxFields: Infinity })
  const records: { record: string[]; raw: string }[] = []
  try {
    for (const chunk of chunks) records.push(...tokenizer.push(chunk))
    records.push(...tokenizer.end())
    return { records, error: null }
  } catch (err) {
    return { records, error: (err as { code: string }).code }
  }
}

/** The length of the line break ending raw (0-2): an escaped \r or \n is text, not a line end. */
function terminatorLength(raw: string, quoting: Quoting): number {
  const escape = quoting.escape === quoting.quote ? null : quoting.escape
  const escaped = (at: number) => {
    let n = 0
    while (escape !== null && raw[at - 1 - n] === escape) n++
    return n % 2 === 1
  }
  const last = raw.length - 1
  if ((raw[last] !== '\n' && raw[last] !== '\r') || escaped(last)) return 0
  return raw[last] === '\n' && raw[last - 1] === '\r' && !escaped(last - 1) ? 2 : 1
}

const show = (seed: number, q: Quoting, text: string, chunks?: string[]) =>
  `TOKENIZER_SEED=${seed} quoting=${JSON.stringify(q)} text=${JSON.stringify(text)}${chunks ? ` chunks=${JSON.stringify(chunks)}` : ''}`

describe(`tokenizer: differential fuzz (TOKENIZER_SEED=${SEED})`, () => {
  const ROUNDS = 4000

  test('chunked input reads as the whole text; raws add up to the text; breaks count the raw', () => {
    const rand = mulberry32(SEED)
    for (let round = 0; round < ROUNDS; round++) {
      for (const quoting of QUOTINGS) {
        const text = randomText(rand)
        const whole = run([text], quoting)
        const chunks = randomChunks(text, rand)
        assert.deepEqual(run(chunks, quoting), whole, show(SEED, quoting, text, chunks))
        if (whole.error === null) assert.equal(whole.records.map((r) => r.raw).join(''), text, show(SEED, quoting, text))
        for (const r of whole.records) {
          assert.equal(r.breaks, countBreaks(r.raw), show(SEED, quoting, text))
          assert.ok(r.fields.length > 0)
          if (r.quotedEmpty) for (const i of r.quotedEmpty) assert.equal(r.fields[i], '', show(SEED, quoting, text))
        }
      }
    }
  })

  test('the same fields as the old tokenizer; its raw differs only by the \\n of a record-ending \\r\\n', () => {
    const rand = mulberry32(SEED ^ 0x5bd1e995)
    for (let round = 0; round < ROUNDS; round++) {
      for (const quoting of QUOTINGS) {
        const text = randomText(rand)
        const chunks = randomChunks(text, rand)
        const now = run(chunks, quoting)
        const old = runOld(chunks, quoting)
        const where = show(SEED, quoting, text, chunks)
        assert.equal(now.error, old.error, where)
        assert.deepEqual(now.records.map((r) => r.fields), old.records.map((r) => r.record), where)
        now.records.forEach((r, i) => {
          const oldRaw = old.records[i]!.raw
          assert.ok(oldRaw === r.raw || (oldRaw.endsWith('\r') && oldRaw + '\n' === r.raw), `${where} raw ${JSON.stringify(oldRaw)} vs ${JSON.stringify(r.raw)}`)
          assert.equal(countBreaks(oldRaw), r.breaks, where)
        })
      }
    }
  })

  test('limits fail at the first record over them, wherever the chunks are cut', () => {
    const rand = mulberry32(SEED ^ 0x1b873593)
    for (let round = 0; round < ROUNDS; round++) {
      for (const quoting of QUOTINGS) {
        const text = randomText(rand)
        const limits = { maxFieldBytes: 1 + Math.floor(rand() * 12), maxFields: 1 + Math.floor(rand() * 4), maxRecordLines: 1 + Math.floor(rand() * 3) }
        const chunks = randomChunks(text, rand)
        const where = `${show(SEED, quoting, text, chunks)} limits=${JSON.stringify(limits)}`
        const limited = run([text], quoting, limits)
        assert.deepEqual(run(chunks, quoting, limits), limited, where)
        const free = run([text], quoting)
        const over = (r: TokenizedRecord) => {
          const codes: string[] = []
          if (r.raw.length - terminatorLength(r.raw, quoting) > limits.maxFieldBytes) codes.push('CSV_MAX_RECORD_SIZE')
          if (r.fields.length > limits.maxFields) codes.push('CSV_TOO_MANY_FIELDS')
          if (r.breaks > limits.maxRecordLines) codes.push('CSV_RECORD_TOO_MANY_LINES')
          return codes
        }
        const firstOver = free.records.findIndex((r) => over(r).length > 0)
        if (firstOver >= 0) {
          assert.deepEqual(limited.records, free.records.slice(0, firstOver), where)
          assert.ok(over(free.records[firstOver]!).includes(limited.error!), where)
        } else if (free.error === null) {
          assert.deepEqual(limited, free, where)
        } else { // the unclosed last record may break a limit before the end
          assert.deepEqual(limited.records, free.records, where)
          assert.ok(limited.error !== null, where)
        }
      }
    }
  })
})
