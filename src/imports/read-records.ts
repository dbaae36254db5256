import { isUtf8 } from 'node:buffer'
import type { Readable } from 'node:stream'
import iconv from 'iconv-lite'
import { incompleteUtf8Tail, normalizeEncoding, utf8SequenceLength, type Dialect } from './dialect.ts'
import { createTokenizer, type TokenizedRecord, type TokenizerError, type TokenLimits } from './tokenizer.ts'
import { joinHeader } from './layout.ts'

export type CsvRecord = {
  line: number // 1-based line of the original file where the record starts
  fields: string[]
  /** Fields written as `""`: an empty string, where an empty unquoted field means NULL (as in COPY). */
  quotedEmpty: number[]
  raw: string // the record's text without its line break, for error reports
  lines: number // physical lines the record spans (a quoted line break adds one)
  /** Why the record cannot load whatever its values: bytes the encoding cannot read. */
  problem: string | null
}

/**
 * How every physical line of the file was used; the parts add up to `total`. Filled in as
 * the file is read: complete once the records have all been taken.
 */
export type LineAccount = {
  total: number
  sepLine: number
  skipped: number // before the header (or first record): titles, notes
  header: number
  blank: number // empty, or only delimiters
  comment: number
  footer: number
  records: number // data records yielded
  recordLines: number // the physical lines those records span
}

export const newLineAccount = (): LineAccount => ({ total: 0, sepLine: 0, skipped: 0, header: 0, blank: 0, comment: 0, footer: 0, records: 0, recordLines: 0 })

export type ReadOptions = {
  signal?: AbortSignal
  onProgress?: (bytesRead: number) => void
  maxFieldBytes?: number // also caps a whole record: the tokenizer measures the record, not the field
  maxFields?: number
  /** Filled in while reading: how each line of the file was used. */
  account?: LineAccount
}

export type CsvReadErrorCode = 'INVALID_ENCODING' | 'MALFORMED_CSV' | 'FIELD_TOO_LARGE' | 'TOO_MANY_FIELDS'
export type CsvReadError = Error & { code: CsvReadErrorCode; line: number }

type Limits = { maxFieldBytes: number; maxFields: number }

export const READ_DEFAULTS: Limits = { maxFieldBytes: 16 * 1024 * 1024, maxFields: 10_000 }

// Tokenizer failures (named after csv-parse's codes) as the user should read them.
const PARSE_FAILURES: Record<string, [CsvReadErrorCode, (limits: Limits) => string]> = {
  CSV_QUOTE_NOT_CLOSED: ['MALFORMED_CSV', () =>
    'a quoted field starts in this record and its closing quote is missing. Check the quotes from this line on.'],
  CSV_MAX_RECORD_SIZE: ['FIELD_TOO_LARGE', (l) =>
    `a field or record is larger than ${formatBytes(l.maxFieldBytes)}. ` +
    'A missing closing quote often causes this: check the quotes from this line on.'],
  CSV_TOO_MANY_FIELDS: ['TOO_MANY_FIELDS', (l) =>
    `the record has more than ${l.maxFields} fields. Check that the right delimiter was chosen.`],
}

// A quoted field over this many lines, in a file whose sample has none that span lines,
// is a quote that never closed: stop rather than load the lines glued into one cell.
const RUNAWAY_QUOTE_LINES = 100
const INVALID_MARK = '\uFDD0' // a noncharacter standing for bytes the encoding cannot read

export async function* readRecords(
  input: AsyncIterable<Buffer> | Readable,
  dialect: Dialect,
  options: ReadOptions = {},
): AsyncGenerator<CsvRecord> {
  for await (const batch of readRecordBatches(input, dialect, options)) yield* batch
}

/**
 * The records as batches (one per decoded chunk, a few thousand records): what the import
 * reads, since a promise per record costs about as much as tokenizing it.
 */
export async function* readRecordBatches(
  input: AsyncIterable<Buffer> | Readable,
  dialect: Dialect,
  options: ReadOptions = {},
): AsyncGenerator<CsvRecord[]> {
  const opts = { ...READ_DEFAULTS, ...options }
  const account = opts.account ?? newLineAccount()
  const invalid: number[][] = [] // the bytes behind each INVALID_MARK, in order
  const lead = { skip: (dialect.sepLine ? 1 : 0) + dialect.skipLines, skipped: 0 }
  const text = skipLeadingLines(decodeText(input, dialect, opts, invalid, account), lead, invalid)
  const maxLines = dialect.multilineRecords ? Infinity : RUNAWAY_QUOTE_LINES
  const batches = tokenizeText(text, dialect, { ...opts, maxRecordLines: maxLines })
  let breaks = 0 // line breaks before the next record, after the skipped lines
  let headerLeft = dialect.header ? Math.max(1, dialect.headerLines) : 0
  let headerCells: string[] = []
  let headerFrom = 0 // the header's first line
  const held: Held[] = [] // records that may turn out to be the footer
  let seenLines = 0
  const noFooter = dialect.footerLines === 0
  try {
    for await (const batch of batches) {
      const out: CsvRecord[] = []
      for (const token of batch) {
        const { fields, raw } = token
        const line = lead.skipped + breaks + 1
        breaks += token.breaks
        const endsLine = raw.endsWith('\n') || raw.endsWith('\r')
        const lines = endsLine ? Math.max(1, token.breaks) : token.breaks + 1
        seenLines = line + lines - 1
        if (lines > maxLines) throw runawayQuote(line)
        const kind = dialect.comment !== null && raw.startsWith(dialect.comment) ? 'comment'
          : token.quotedEmpty === null && fields.every((f) => f.trim() === '') ? 'blank' : 'data'
        if ((kind !== 'data' || headerLeft > 0) && invalid.length > 0) dropMarks(raw, invalid) // only data rows report undecodable bytes
        if (kind === 'data' && headerLeft > 0) {
          const cells = fields.map((f) => f.replaceAll(INVALID_MARK, '\uFFFD'))
          headerCells = headerLeft === 2 ? cells : headerCells.length ? joinHeader(headerCells, cells) : cells
          headerLeft--
          account.header += lines
          if (headerFrom === 0) headerFrom = line
          if (headerLeft === 0) out.push(headerRecord(headerCells, headerFrom, line + lines - headerFrom, raw, dialect.width))
          continue
        }
        const item = kind === 'data' ? toRecord(token, line, lines, dialect.width, invalid, dialect.encoding) : null
        if (noFooter) { // every record is data at once: no Held in between (the common case, and the hot loop)
          const next = release({ kind, item, line, lines }, account)
          if (next) out.push(next)
          continue
        }
        held.push({ kind, item, line, lines })
        // A record is data for sure once more lines than the footer follow its start.
        while (held.length > 0 && held[0]!.line <= seenLines - dialect.footerLines) {
          const next = release(held.shift()!, account)
          if (next) out.push(next)
        }
      }
      if (out.length > 0) {
        yield out
        opts.signal?.throwIfAborted()
      }
    }
  } catch (err) {
    throw toReadError(err, lead.skipped + breaks + 1, opts)
  }
  account.sepLine = dialect.sepLine ? Math.min(1, lead.skipped) : 0
  account.skipped = lead.skipped - account.sepLine
  const footerFrom = account.total - dialect.footerLines // the last line that is not footer
  const last: CsvRecord[] = []
  for (const rest of held) {
    if (rest.line > footerFrom) {
      account.footer += rest.lines
      continue
    }
    const next = release(rest, account)
    if (next) last.push(next)
  }
  if (last.length > 0) yield last
}

type Held = { kind: 'data' | 'blank' | 'comment'; item: CsvRecord | null; line: number; lines: number }

function release(held: Held, account: LineAccount): CsvRecord | null {
  if (held.kind !== 'data') {
    account[held.kind] += held.lines
    return null
  }
  account.records++
  account.recordLines += held.lines
  return held.item
}

// A class, not a literal, for the reason the tokenizer's Token is one: batches keep records
// alive across young GCs, and a pretenured literal site would slow every later GC.
class ReadRecord implements CsvRecord {
  constructor(public line: number, public fields: string[], public quotedEmpty: number[], public raw: string, public lines: number, public problem: string | null) {}
}

const NO_QUOTED_EMPTY: number[] = Object.freeze([]) as unknown as number[]

function toRecord(token: TokenizedRecord, line: number, lines: number, width: number, invalid: number[][], encoding: string): CsvRecord {
  let { fields, raw } = token
  let problem: string | null = null
  // Every mark has its bytes queued: with none queued, no record holds one.
  if (invalid.length > 0 && raw.includes(INVALID_MARK)) {
    let marks = 0
    fields = fields.map((text) => {
      if (!text.includes(INVALID_MARK)) return text
      marks += text.split(INVALID_MARK).length - 1
      return text.replaceAll(INVALID_MARK, '\uFFFD')
    })
    problem = undecodable(invalid.splice(0, marks), encoding)
    raw = raw.replaceAll(INVALID_MARK, '\uFFFD')
  }
  return new ReadRecord(line, trimTrailingEmpty(fields, width), token.quotedEmpty ?? NO_QUOTED_EMPTY, withoutBreak(raw), lines, problem)
}

const withoutBreak = (raw: string) => raw.endsWith('\r\n') ? raw.slice(0, -2) : raw.endsWith('\n') || raw.endsWith('\r') ? raw.slice(0, -1) : raw

function headerRecord(cells: string[], line: number, lines: number, raw: string, width: number): CsvRecord {
  const fields = Array.from({ length: Math.max(width, cells.length) }, (_, i) => cells[i] ?? '')
  return { line, fields, quotedEmpty: [], raw: raw.replace(/(?:\r\n|\r|\n)$/, ''), lines, problem: null }
}

function runawayQuote(line: number): Error {
  return Object.assign(new Error(`line ${line}: a quoted field starts on this line and runs over more than ${RUNAWAY_QUOTE_LINES} lines, ` +
    'while the rest of the file has one record per line. The quote character is probably plain text in this file: import with quote=none.'), { code: 'MALFORMED_CSV', line })
}

function undecodable(bytes: number[][], encoding: string): string {
  const all = bytes.flat()
  const hex = all.slice(0, 8).map((b) => `0x${b.toString(16).toUpperCase().padStart(2, '0')}`).join(' ')
  const what = all.length === 0 ? 'some bytes are' : all.length === 1 ? `byte ${hex} is` : `bytes ${hex}${all.length > 8 ? ' …' : ''} are`
  return `${what} not valid ${encoding} (shown as \uFFFD): this row is probably in another encoding; fix the row, or choose the file's encoding`
}

/** Drops the first `lead.skip` physical lines of the text (titles above the table), counting them. */
async function* skipLeadingLines(text: AsyncIterable<string>, lead: { skip: number; skipped: number }, invalid: number[][]): AsyncGenerator<string> {
  let afterCR = false
  for await (let chunk of text) {
    if (lead.skipped < lead.skip) {
      const before = chunk
      chunk = dropLines(chunk)
      dropMarks(before.slice(0, before.length - chunk.length), invalid)
    }
    if (!chunk) continue
    if (afterCR && chunk[0] === '\n') chunk = chunk.slice(1)
    afterCR = false
    if (chunk) yield chunk
  }

  function dropLines(chunk: string): string {
    while (lead.skipped < lead.skip && chunk.length > 0) {
      if (afterCR && chunk[0] === '\n') chunk = chunk.slice(1)
      afterCR = false
      if (!chunk) return ''
      const at = chunk.search(/[\r\n]/)
      if (at < 0) return ''
      lead.skipped++
      afterCR = chunk[at] === '\r'
      chunk = chunk.slice(at + 1)
    }
    return chunk
  }
}

/** Forgets the queued bytes of the marks in text that is not reported (skipped lines, headers, comments). */
function dropMarks(text: string, invalid: number[][]): void {
  let marks = 0
  for (let at = text.indexOf(INVALID_MARK); at >= 0; at = text.indexOf(INVALID_MARK, at + 1)) marks++
  if (marks > 0) invalid.splice(0, marks)
}

/** Line breaks in text: \r\n counts once, and so does one split across two chunks. */
export function countBreaks(text: string, afterCR = false): number {
  // indexOf scans natively, several times faster than a loop over every character.
  let n = 0
  for (let at = text.indexOf('\r'); at >= 0; at = text.indexOf('\r', at + 1)) n++
  for (let at = text.indexOf('\n'); at >= 0; at = text.indexOf('\n', at + 1)) {
    if (!(at === 0 ? afterCR : text.charCodeAt(at - 1) === 13)) n++
  }
  return n
}

/**
 * The decoded text as batches of records. A tokenizer error comes after the records it
 * completed, so that they are counted and the error's line is right.
 */
async function* tokenizeText(text: AsyncIterable<string>, dialect: Dialect, limits: TokenLimits): AsyncGenerator<TokenizedRecord[]> {
  const tokenizer = createTokenizer(dialect, limits)
  const completedBefore = (err: unknown) => (err as Partial<TokenizerError>).completed ?? []
  for await (const chunk of text) {
    let batch: TokenizedRecord[]
    try {
      batch = tokenizer.push(chunk)
    } catch (err) {
      yield completedBefore(err)
      throw err
    }
    if (batch.length > 0) yield batch
  }
  let last: TokenizedRecord[]
  try {
    last = tokenizer.end()
  } catch (err) {
    yield completedBefore(err)
    throw err
  }
  yield last
}

async function* decodeText(input: AsyncIterable<Buffer>, dialect: Dialect, opts: ReadOptions, invalid: number[][], account: LineAccount) {
  const decoder = createDecoder(dialect.encoding, invalid)
  let bytesRead = 0
  let afterCR = false
  let atStart = true
  let last = ''
  account.total = 0
  for await (const chunk of input) {
    opts.signal?.throwIfAborted()
    bytesRead += chunk.length
    const text = counted(decoder.write(chunk))
    opts.onProgress?.(bytesRead)
    if (text) yield text
  }
  const text = counted(decoder.end())
  if (text) yield text
  if (last !== '' && last !== '\n' && last !== '\r') account.total++ // a last line without a break

  function counted(text: string): string {
    if (!text) return ''
    if (atStart) {
      atStart = false
      if (text.startsWith('\uFEFF')) text = text.slice(1)
    }
    account.total += countBreaks(text, afterCR)
    afterCR = text.endsWith('\r')
    if (text) last = text[text.length - 1]!
    return text
  }
}

type Decoder = { write(chunk: Buffer): string; end(): string }

/**
 * Bytes the encoding cannot read become INVALID_MARK, their bytes queued in `invalid`: the
 * record holding them fails with its line, and the rest of the file still reads (a UTF-8
 * file with one Latin-1 name is one bad row, not a failed import).
 */
function createDecoder(encoding: string, invalid: number[][]): Decoder {
  const name = normalizeEncoding(encoding)
  if (name === 'utf-8') return createUtf8Decoder(invalid)
  // iconv-lite passes lone surrogates through; TextDecoder turns them into U+FFFD, which is marked.
  if (name === 'utf-16le' || name === 'utf-16be') {
    const decoder = new TextDecoder(name)
    return {
      write: (chunk) => markReplacements(decoder.decode(chunk, { stream: true }), chunk, invalid),
      end: () => markReplacements(decoder.decode(), Buffer.alloc(0), invalid),
    }
  }
  const nearLatin1 = latin1Differences(name)
  if (nearLatin1) {
    return {
      write: (chunk) => markReplacements(decodeNearLatin1(chunk, nearLatin1), chunk, invalid),
      end: () => '',
    }
  }
  const decoder = iconv.getDecoder(name)
  return {
    write: (chunk) => markReplacements(decoder.write(chunk), chunk, invalid),
    end: () => markReplacements(decoder.end() ?? '', Buffer.alloc(0), invalid),
  }
}

type NearLatin1 = { pattern: RegExp; chars: string[] }

/**
 * A single-byte code page that differs from ISO-8859-1 in a few bytes only (windows-1252:
 * 0x80-0x9F): its table, taken from iconv-lite itself so that the text is the same. Decoding
 * it as latin1 (native) and replacing those few characters is several times faster than
 * iconv-lite's byte loop. Null for any other encoding.
 */
function latin1Differences(name: string): NearLatin1 | null {
  if (!iconv.encodingExists(name)) return null
  const bytes = Buffer.from(Array.from({ length: 256 }, (_, b) => b))
  const chars = [...iconv.decode(bytes, name)]
  if (chars.length !== 256) return null // a multi-byte encoding
  const differing = chars.flatMap((c, b) => (c === String.fromCharCode(b) ? [] : [b]))
  if (differing.length > 32) return null
  const klass = differing.map((b) => `\\x${b.toString(16).padStart(2, '0')}`).join('')
  return { pattern: new RegExp(differing.length ? `[${klass}]` : '(?!)', 'g'), chars }
}

function decodeNearLatin1(chunk: Buffer, table: NearLatin1): string {
  const text = chunk.toString('latin1')
  table.pattern.lastIndex = 0
  return table.pattern.test(text) ? text.replace(table.pattern, (c) => table.chars[c.charCodeAt(0)]!) : text
}

// Decoders other than UTF-8 write U+FFFD for bytes they cannot map: a genuine U+FFFD in
// such a file is rare enough to be reported too.
function markReplacements(text: string, chunk: Buffer, invalid: number[][]): string {
  if (!text.includes('\uFFFD')) return text
  const singleByte = text.length === chunk.length // one character per byte: the byte is known
  return text.replace(/\uFFFD/g, (_, at: number) => {
    invalid.push(singleByte ? [chunk[at]!] : [])
    return INVALID_MARK
  })
}

// A literal U+FFFD is valid UTF-8 and must pass, so UTF-8 is checked byte-wise, not by replacement.
function createUtf8Decoder(invalid: number[][]): Decoder {
  let pending = Buffer.alloc(0) // the start of a character cut by the chunk boundary
  return {
    write(chunk) {
      const bytes = pending.length ? Buffer.concat([pending, chunk]) : chunk
      const cut = bytes.length - incompleteUtf8Tail(bytes)
      pending = Buffer.from(bytes.subarray(cut))
      return decodeMarked(bytes.subarray(0, cut), invalid)
    },
    end() {
      if (!pending.length) return ''
      invalid.push([...pending])
      pending = Buffer.alloc(0)
      return INVALID_MARK
    },
  }
}

function decodeMarked(body: Buffer, invalid: number[][]): string {
  if (isUtf8(body)) return body.toString('utf8')
  let text = ''
  let from = 0
  let i = 0
  while (i < body.length) {
    const length = validSequenceAt(body, i)
    if (length > 0) { i += length; continue }
    const end = i + invalidSequenceLength(body, i)
    text += body.toString('utf8', from, i) + INVALID_MARK
    invalid.push([...body.subarray(i, end)])
    i = from = end
  }
  return text + body.toString('utf8', from)
}

/** Length of the well-formed UTF-8 sequence at i (Unicode table 3-7), or 0. */
function validSequenceAt(b: Buffer, i: number): number {
  const lead = b[i]!
  if (lead < 0x80) return 1
  const cont = (k: number, lo = 0x80, hi = 0xbf) => i + k < b.length && b[i + k]! >= lo && b[i + k]! <= hi
  if (lead >= 0xc2 && lead <= 0xdf) return cont(1) ? 2 : 0
  if (lead === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0
  if ((lead >= 0xe1 && lead <= 0xec) || lead === 0xee || lead === 0xef) return cont(1) && cont(2) ? 3 : 0
  if (lead === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0
  if (lead === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0
  if (lead >= 0xf1 && lead <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0
  if (lead === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0
  return 0
}

/** The lead byte and the continuation bytes that followed it before the sequence broke. */
function invalidSequenceLength(b: Buffer, i: number): number {
  const lead = b[i]!
  const expected = lead >= 0xf0 && lead <= 0xf4 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc2 ? 2 : 1
  let n = 1
  while (n < expected && i + n < b.length && b[i + n]! >= 0x80 && b[i + n]! <= 0xbf && validSequenceAt(b, i + n) === 0) n++
  return n
}

function toReadError(err: unknown, line: number, limits: Limits): unknown {
  const code = err instanceof Error && 'code' in err ? String(err.code) : ''
  if (!code.startsWith('CSV_')) return err // ours already, an abort, or a bug
  if (code === 'CSV_RECORD_TOO_MANY_LINES') return runawayQuote(line)
  const [readCode, explain] = PARSE_FAILURES[code] ?? ['MALFORMED_CSV', () => `the CSV is malformed (${(err as Error).message}).`]
  return readError(readCode, line, explain(limits))
}

function readError(code: CsvReadErrorCode, line: number, detail: string): CsvReadError {
  return Object.assign(new Error(`line ${line}: ${detail}`), { code, line })
}

function trimTrailingEmpty(fields: string[], width: number): string[] {
  for (let i = width; i < fields.length; i++) if (fields[i] !== '') return fields
  return fields.length > width ? fields.slice(0, width) : fields
}

function formatBytes(n: number): string {
  return n >= 2 ** 20 ? `${+(n / 2 ** 20).toFixed(1)} MiB` : `${n} bytes`
}
