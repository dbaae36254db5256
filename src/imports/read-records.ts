import { isUtf8 } from 'node:buffer'
import { pipeline, Readable } from 'node:stream'
import { parse } from 'csv-parse'
import iconv from 'iconv-lite'
import {
  createTokenizer, incompleteUtf8Tail, normalizeEncoding, parseFailure, utf8SequenceLength,
  type Dialect, type ParsedRecord,
} from './dialect.ts'

export type CsvRecord = {
  line: number // 1-based line of the original file where the record starts
  fields: string[]
  /** Fields written as `""`: an empty string, where an empty unquoted field means NULL (as in COPY). */
  quotedEmpty: number[]
  raw: string // the record's text without its line break, for error reports
}

/** csv-parse hands `cast` each field with its quoting; this marks `""` apart from nothing at all. */
const QUOTED_EMPTY = Object.freeze({ quotedEmpty: true })

export type ReadOptions = {
  signal?: AbortSignal
  onProgress?: (bytesRead: number) => void
  maxFieldBytes?: number // also caps a whole record: csv-parse measures the record, not the field
  maxFields?: number
}

export type CsvReadErrorCode = 'INVALID_ENCODING' | 'MALFORMED_CSV' | 'FIELD_TOO_LARGE' | 'TOO_MANY_FIELDS'
export type CsvReadError = Error & { code: CsvReadErrorCode; line: number }

type Limits = { maxFieldBytes: number; maxFields: number }
type ParsedItem = ParsedRecord | { failure: unknown }

export const READ_DEFAULTS: Limits = { maxFieldBytes: 16 * 1024 * 1024, maxFields: 10_000 }

// All three are accepted in every file: a 64 KiB sample cannot promise what the rest uses.
const RECORD_DELIMITERS = ['\r\n', '\n', '\r']

// Parser failures (csv-parse's codes, reused by the tokenizer) as the user should read them.
const PARSE_FAILURES: Record<string, [CsvReadErrorCode, (limits: Limits) => string]> = {
  CSV_QUOTE_NOT_CLOSED: ['MALFORMED_CSV', () =>
    'a quoted field starts in this record and its closing quote is missing. Check the quotes from this line on.'],
  CSV_MAX_RECORD_SIZE: ['FIELD_TOO_LARGE', (l) =>
    `a field or record is larger than ${formatBytes(l.maxFieldBytes)}. ` +
    'A missing closing quote often causes this: check the quotes from this line on.'],
  CSV_TOO_MANY_FIELDS: ['TOO_MANY_FIELDS', (l) =>
    `the record has more than ${l.maxFields} fields. Check that the right delimiter was chosen.`],
}

export async function* readRecords(
  input: AsyncIterable<Buffer> | Readable,
  dialect: Dialect,
  options: ReadOptions = {},
): AsyncGenerator<CsvRecord> {
  const opts = { ...READ_DEFAULTS, ...options }
  const text = decodeText(input, dialect, opts)
  const batches = hasEscapeChar(dialect) ? tokenizeText(text, dialect, opts) : parseText(text, dialect, opts)
  let breaks = 0 // line breaks before the next record
  let isSepLine = dialect.sepLine
  let width = -1
  try {
    for await (const batch of batches) {
      for (const item of batch) {
        if ('failure' in item) throw item.failure
        const { record, raw } = item
        if (record.length > opts.maxFields) throw parseFailure('CSV_TOO_MANY_FIELDS')
        const line = breaks + 1
        breaks += countBreaks(raw)
        if (record.length === 1 && raw.trim() === '') continue // a blank line
        if (isSepLine) { isSepLine = false; continue }
        if (width < 0) width = record.length
        const quotedEmpty: number[] = []
        const fields = (record as unknown[]).map((value, i) => {
          if (value !== QUOTED_EMPTY) return value as string
          quotedEmpty.push(i)
          return ''
        })
        yield { line, fields: trimTrailingEmpty(fields, width), quotedEmpty, raw: raw.replace(/(?:\r\n|\r|\n)$/, '') }
        opts.signal?.throwIfAborted()
      }
    }
  } catch (err) {
    throw toReadError(err, breaks + 1, opts)
  }
}

/** Line breaks in text: \r\n counts once, and so does one split across two chunks. */
export function countBreaks(text: string, afterCR = false): number {
  let n = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 13) n++
    else if (c === 10 && !(i === 0 ? afterCR : text.charCodeAt(i - 1) === 13)) n++
  }
  return n
}

function hasEscapeChar(dialect: Dialect): boolean {
  return dialect.escape !== null && dialect.escape !== dialect.quote
}

async function* tokenizeText(text: AsyncIterable<string>, dialect: Dialect, limits: Limits) {
  const tokenizer = createTokenizer(dialect, limits)
  for await (const chunk of text) yield tokenizer.push(chunk)
  yield tokenizer.end()
}

// A failure travels in the record stream, after the records before it: a stream error would
// drop the records still buffered, and the failure's line would be lost with them.
function parseText(text: AsyncIterable<string>, dialect: Dialect, limits: Limits): AsyncIterable<ParsedItem[]> {
  const parser = parse({
    delimiter: dialect.delimiter,
    quote: dialect.quote ?? false,
    escape: dialect.quote ?? false, // RFC 4180 doubling; other escapes go through the tokenizer
    record_delimiter: RECORD_DELIMITERS,
    relax_column_count: true, // ragged rows are for the loader to report
    relax_quotes: true, // a stray quote inside a field is text, as in Excel
    raw: true,
    cast: (value, context) => (value === '' && context.quoting ? (QUOTED_EMPTY as unknown as string) : value),
    max_record_size: limits.maxFieldBytes,
    ignore_last_delimiters: limits.maxFields + 1, // stops a field-count bomb from growing an array
    skip_records_with_error: true,
    on_skip: (failure) => { parser.push({ failure }) },
  })
  // Decoding errors and aborts reach the reader through the parser; their line is already known.
  pipeline(Readable.from(text), parser, () => {})
  return batchesOf(parser)
}

// One await per record costs more than parsing it: take whatever the stream has buffered.
async function* batchesOf(stream: Readable): AsyncGenerator<ParsedItem[]> {
  for await (const first of stream) {
    const batch: ParsedItem[] = [first]
    for (let item = stream.read(); item !== null; item = stream.read()) batch.push(item)
    yield batch
  }
}

async function* decodeText(input: AsyncIterable<Buffer>, dialect: Dialect, opts: ReadOptions) {
  const decoder = createDecoder(dialect.encoding)
  let bytesRead = 0
  let lines = 0 // line breaks decoded so far, to place an encoding error
  let afterCR = false
  let atStart = true
  for await (const chunk of input) {
    opts.signal?.throwIfAborted()
    bytesRead += chunk.length
    const text = decode(() => decoder.write(chunk))
    opts.onProgress?.(bytesRead)
    if (text) yield text
  }
  const text = decode(() => decoder.end())
  if (text) yield text

  function decode(run: () => string): string {
    let text: string
    try {
      text = run()
    } catch (err) {
      if (!isDecodeFailure(err)) throw err
      throw invalidEncoding(err, lines + countBreaks(err.textBefore, afterCR) + 1, dialect.encoding)
    }
    if (!text) return ''
    lines += countBreaks(text, afterCR)
    afterCR = text.endsWith('\r')
    if (atStart) {
      atStart = false
      if (text.startsWith('\uFEFF')) text = text.slice(1)
    }
    return text
  }
}

type Decoder = { write(chunk: Buffer): string; end(): string }
type DecodeFailure = Error & { bytes: number[]; textBefore: string }

function createDecoder(encoding: string): Decoder {
  const name = normalizeEncoding(encoding)
  if (name === 'utf-8') return createUtf8Decoder()
  // iconv-lite passes lone surrogates through; TextDecoder turns them into U+FFFD, which is caught.
  if (name === 'utf-16le' || name === 'utf-16be') {
    const decoder = new TextDecoder(name)
    return {
      write: (chunk) => rejectReplacements(decoder.decode(chunk, { stream: true }), chunk),
      end: () => rejectReplacements(decoder.decode(), Buffer.alloc(0)),
    }
  }
  const decoder = iconv.getDecoder(name)
  return {
    write: (chunk) => rejectReplacements(decoder.write(chunk), chunk),
    end: () => rejectReplacements(decoder.end() ?? '', Buffer.alloc(0)),
  }
}

// Decoders other than UTF-8 mark bytes they cannot map with U+FFFD: a genuine U+FFFD in
// such a file is rare enough to be reported too.
function rejectReplacements(text: string, chunk: Buffer): string {
  const at = text.indexOf('\uFFFD')
  if (at < 0) return text
  const bytes = text.length === chunk.length ? [chunk[at]!] : [] // single-byte: one char per byte
  throw decodeFailure(bytes, text.slice(0, at))
}

// A literal U+FFFD is valid UTF-8 and must pass, so UTF-8 is checked byte-wise, not by replacement.
function createUtf8Decoder(): Decoder {
  let pending = Buffer.alloc(0) // the start of a character cut by the chunk boundary
  return {
    write(chunk) {
      const bytes = pending.length ? Buffer.concat([pending, chunk]) : chunk
      const cut = bytes.length - incompleteUtf8Tail(bytes)
      pending = Buffer.from(bytes.subarray(cut))
      const body = bytes.subarray(0, cut)
      if (isUtf8(body)) return body.toString('utf8')
      const [start, end] = firstInvalidUtf8(body)
      throw decodeFailure([...body.subarray(start, end)], body.subarray(0, start).toString('utf8'))
    },
    end() {
      if (pending.length) throw decodeFailure([...pending], '')
      return ''
    },
  }
}

/** [start, end) of the first invalid sequence in body, which is known to hold one. */
function firstInvalidUtf8(body: Buffer): [number, number] {
  const decodes = (n: number) => {
    try {
      new TextDecoder('utf-8', { fatal: true }).decode(body.subarray(0, n), { stream: true })
      return true
    } catch {
      return false
    }
  }
  let ok = 0
  let bad = body.length
  while (bad - ok > 1) {
    const mid = (ok + bad) >>> 1
    if (decodes(mid)) ok = mid
    else bad = mid
  }
  // bad - 1 is the byte that broke it; include the lead byte of the sequence it broke.
  for (let i = bad - 2; i >= Math.max(0, bad - 4); i--) {
    const b = body[i]!
    if (b >= 0xc0) return [i + utf8SequenceLength(b) > bad - 1 ? i : bad - 1, bad]
    if (b < 0x80) break
  }
  return [bad - 1, bad]
}

function decodeFailure(bytes: number[], textBefore: string): DecodeFailure {
  return Object.assign(new Error('undecodable bytes'), { bytes, textBefore })
}

function isDecodeFailure(err: unknown): err is DecodeFailure {
  return err instanceof Error && 'textBefore' in err
}

function invalidEncoding(failure: DecodeFailure, line: number, encoding: string): CsvReadError {
  const hex = failure.bytes.map((b) => `0x${b.toString(16).toUpperCase().padStart(2, '0')}`).join(' ')
  const what = failure.bytes.length === 0 ? 'some bytes are' : failure.bytes.length === 1 ? `byte ${hex} is` : `bytes ${hex} are`
  return readError('INVALID_ENCODING', line,
    `${what} not valid ${encoding}. Re-save the file as UTF-8 or choose its encoding.`)
}

function toReadError(err: unknown, line: number, limits: Limits): unknown {
  const code = err instanceof Error && 'code' in err ? String(err.code) : ''
  if (!code.startsWith('CSV_')) return err // ours already, an abort, or a bug
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
