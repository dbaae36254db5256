import { isUtf8 } from 'node:buffer'
import { analyse } from 'chardet'
import iconv from 'iconv-lite'
import { detectLayout, type Layout, type LayoutOverrides, type SampleRecord } from './layout.ts'
import { createTokenizer } from './tokenizer.ts'

export type LineEnding = '\n' | '\r\n' | '\r' | 'mixed'

export type Dialect = {
  encoding: string // 'utf-8', 'utf-16le', 'utf-16be', 'windows-1252', 'iso-8859-1' or another iconv-lite name
  bom: boolean
  delimiter: string
  quote: string | null
  escape: string | null // the quote itself means RFC 4180 doubling; null means none
  header: boolean
  lineEnding: LineEnding
  sepLine: boolean // Excel's "sep=;" first line: it sets the delimiter and is not data
  /** The sample has records that span lines (quoted line breaks): a long one later is no surprise. */
  multilineRecords: boolean
  /** Why each guess was made, in sentences for the preview and the task. */
  reasons: string[]
} & Layout

/** What the user chose: each one wins over detection. */
export type DialectOverrides = {
  encoding?: string
  delimiter?: string
  quote?: string | null
  escape?: string | null
} & LayoutOverrides

type Quoting = Pick<Dialect, 'delimiter' | 'quote' | 'escape'>

/** How much of the file detection wants to see. */
export const SAMPLE_BYTES = 64 * 1024

const DELIMITERS = [',', ';', '\t', '|'] // earlier wins a tie
const BOMS: [string, number[]][] = [['utf-8', [0xef, 0xbb, 0xbf]], ['utf-16le', [0xff, 0xfe]], ['utf-16be', [0xfe, 0xff]]]
// ISO-8859-1 and windows-1252 print the same characters except in 0x80-0x9F, where windows-1252
// has € and smart quotes and Latin-1 only control codes, so windows-1252 stands for both.
const WESTERN = new Set(['ISO-8859-1', 'windows-1252'])
const CHARDET_MARGIN = 10 // confidence points another encoding needs over the western guess
const ENCODING_ALIASES: Record<string, string> = {
  utf8: 'utf-8', ascii: 'utf-8', 'us-ascii': 'utf-8', utf16le: 'utf-16le', utf16be: 'utf-16be',
  latin1: 'iso-8859-1', 'latin-1': 'iso-8859-1', cp1252: 'windows-1252',
}
const UNLIMITED = { maxFieldBytes: Infinity, maxFields: Infinity, maxRecordLines: Infinity }

/**
 * Guess how the file is written from its first bytes (up to SAMPLE_BYTES; a record or a
 * character may be cut at the end). Overrides win over what is guessed.
 */
export function detectDialect(sample: Buffer, overrides: DialectOverrides = {}, tailSample: Buffer | null = null): Dialect {
  checkOverrides(overrides)
  const encoding = overrides.encoding ? normalizeEncoding(overrides.encoding) : detectEncoding(sample)
  const text = iconv.decode(sample, encoding) // drops the BOM; a cut character is harmless here
  const sep = /^sep=([^\r\n])(?:\r\n|\r|\n|$)/i.exec(text)
  const body = sep ? text.slice(sep[0].length) : text
  const reasons: string[] = []
  const quoting = detectQuoting(body, { ...overrides, delimiter: overrides.delimiter ?? sep?.[1] }, reasons)
  const tokenize = (part: string) => sampleRecords(part, quoting)
  const tail = tailSample ? iconv.decode(tailSample, encoding) : null
  const layout = detectLayout(body, tail, tokenize, overrides)
  return {
    encoding,
    bom: bomEncoding(sample) === encoding,
    ...quoting,
    lineEnding: detectLineEnding(text),
    sepLine: sep !== null,
    multilineRecords: tokenize(body).some((r) => r.lines > 1),
    ...layout,
    reasons: [...reasons, ...layout.reasons],
  }
}

/** The sample's records with their first line and how many lines each spans; a record cut by the sample's end is kept. */
function sampleRecords(text: string, quoting: Quoting): SampleRecord[] {
  const tokenizer = createTokenizer(quoting, UNLIMITED)
  const parsed = tokenizer.push(text)
  try {
    parsed.push(...tokenizer.end())
  } catch {
    // the sample ends inside a quoted field
  }
  let line = 1
  return parsed.map(({ fields, raw, breaks }) => {
    const lines = Math.max(1, raw.endsWith('\n') || raw.endsWith('\r') ? breaks : breaks + 1)
    const at = line
    line += breaks
    return { fields, line: at, lines }
  })
}

function detectEncoding(sample: Buffer): string {
  const bom = bomEncoding(sample)
  if (bom) return bom
  if (isUtf8(sample.subarray(0, sample.length - incompleteUtf8Tail(sample)))) return 'utf-8'
  const matches = analyse(sample).filter(
    (m) => !m.name.startsWith('UTF') && m.name !== 'ASCII' && iconv.encodingExists(m.name))
  const western = Math.max(0, ...matches.filter((m) => WESTERN.has(m.name)).map((m) => m.confidence))
  const top = matches[0]
  // chardet's scores on a few accented words are close; only a clear lead beats the common case.
  if (top && !WESTERN.has(top.name) && top.confidence >= western + CHARDET_MARGIN) return top.name.toLowerCase()
  return 'windows-1252'
}

export function normalizeEncoding(name: string): string {
  const key = name.trim().toLowerCase()
  const encoding = ENCODING_ALIASES[key] ?? key
  if (iconv.encodingExists(encoding)) return encoding
  throw Object.assign(new Error(`The encoding "${name}" is not supported. Choose one such as utf-8 or windows-1252.`), {
    code: 'UNSUPPORTED_ENCODING' as const,
  })
}

export function utf8SequenceLength(lead: number): number {
  return lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2
}

export function incompleteUtf8Tail(bytes: Buffer): number {
  for (let i = 1; i <= Math.min(3, bytes.length); i++) {
    const b = bytes[bytes.length - i]!
    if (b < 0x80) return 0
    if (b >= 0xc0) return utf8SequenceLength(b) > i ? i : 0
  }
  return 0
}

function bomEncoding(sample: Buffer): string | null {
  const found = BOMS.find(([, bytes]) => bytes.every((b, i) => sample[i] === b))
  return found ? found[0] : null
}

/**
 * Tries every candidate delimiter, quote and escape and keeps the one under which the
 * records' field counts are most consistent (CleverCSV's pattern score).
 */
function detectQuoting(text: string, fixed: Partial<Quoting>, reasons: string[]): Quoting {
  let best: Quoting | null = null
  let bestScore = -1
  for (const delimiter of fixed.delimiter ? [fixed.delimiter] : DELIMITERS) {
    for (const quote of fixed.quote !== undefined ? [fixed.quote] : quoteCandidates(text)) {
      for (const escape of fixed.escape !== undefined ? [fixed.escape] : escapeCandidates(text)) {
        const candidate = { delimiter, quote, escape }
        const score = patternScore(tokenizeSample(text, candidate).complete)
        if (score > bestScore + 1e-9) [best, bestScore] = [candidate, score]
      }
    }
  }
  const { delimiter, quote, escape } = best!
  // A file that escapes with a backslash and never quotes a field has no quote character.
  let finalQuote = fixed.quote !== undefined || escape === null || opensQuotedField(text, delimiter, quote)
    ? quote : null
  if (fixed.quote === undefined && finalQuote !== null) {
    const { closed, broken } = quoteEvidence(text, delimiter, finalQuote)
    // Where a file quotes, quotes close at field ends; here they don't: they are text (an unquoted dump).
    if (broken > 0 && closed <= broken) {
      reasons.push(`no quoting: ${broken} field(s) start with ${finalQuote} but don't end with it at a delimiter or line end, so ${finalQuote} is plain text here (quote=${finalQuote === '"' ? '%22' : finalQuote} forces quoting)`)
      finalQuote = null
    }
  }
  if (fixed.delimiter === undefined) reasons.push(`delimiter ${DELIMITER_NAMES[delimiter] ?? delimiter}: it gives the most rows of one width`)
  const finalEscape = fixed.escape !== undefined ? fixed.escape : escape === quote ? finalQuote : escape ?? finalQuote
  return { delimiter, quote: finalQuote, escape: finalEscape }
}

const DELIMITER_NAMES: Record<string, string> = { ',': 'comma', ';': 'semicolon', '\t': 'tab', '|': 'pipe' }
const QUOTED_FIELD_MAX_LINES = 50

/**
 * Quoted fields in the sample that close where a field ends (before a delimiter, a line
 * end or the end) against those that close mid-field or run on for many lines.
 */
function quoteEvidence(text: string, delimiter: string, quote: string): { closed: number; broken: number } {
  let closed = 0
  let broken = 0
  let atFieldStart = true
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!
    if (atFieldStart && c === quote) {
      let j = i + 1
      let lines = 0
      for (; j < text.length; j++) {
        const d = text[j]!
        if (d === '\n') lines++
        if (d !== quote) continue
        if (text[j + 1] === quote) { j++; continue }
        break
      }
      if (j >= text.length) break // cut by the sample's end: no evidence either way
      const after = text[j + 1]
      if (lines <= QUOTED_FIELD_MAX_LINES && (after === undefined || after === delimiter || after === '\n' || after === '\r')) closed++
      else broken++
      i = j
      atFieldStart = false
      continue
    }
    atFieldStart = c === delimiter || c === '\n' || c === '\r'
  }
  return { closed, broken }
}

function quoteCandidates(text: string): (string | null)[] {
  return /(?:^|[,;\t|])'/m.test(text) ? ['"', "'"] : ['"']
}

function escapeCandidates(text: string): (string | null)[] {
  return text.includes('\\') ? [null, '\\'] : [null]
}

function opensQuotedField(text: string, delimiter: string, quote: string | null): boolean {
  if (quote === null) return false
  return [delimiter, '\n', '\r'].some((before) => text.includes(before + quote)) || text.startsWith(quote)
}

/** Mean over distinct field counts of how many records have it, weighted towards counts > 1. */
function patternScore(rows: string[][]): number {
  const counts = new Map<number, number>()
  for (const row of rows) counts.set(row.length, (counts.get(row.length) ?? 0) + 1)
  let sum = 0
  for (const [length, n] of counts) sum += (n * (length - 1)) / length
  return counts.size ? sum / counts.size : 0
}

/**
 * Records of the sample: `complete` ended with a line break, `last` did not and may be cut.
 * Scoring uses only complete ones unless there are too few of them.
 */
function tokenizeSample(text: string, quoting: Quoting): { complete: string[][]; last: string[] | null } {
  const tokenizer = createTokenizer(quoting, UNLIMITED)
  const isData = (r: { raw: string }) => r.raw.trim() !== ''
  const complete = tokenizer.push(text).filter(isData).map((r) => r.fields)
  let last: string[] | null = null
  try {
    last = tokenizer.end().filter(isData)[0]?.fields ?? null
  } catch {
    // the sample ends inside a quoted field
  }
  return complete.length < 2 && last ? { complete: [...complete, last], last: null } : { complete, last }
}

function detectLineEnding(text: string): LineEnding {
  const whole = text.endsWith('\r') ? text.slice(0, -1) : text // the sample may cut a \r\n
  const kinds = (
    [['\r\n', /\r\n/], ['\r', /\r(?!\n)/], ['\n', /(?<!\r)\n/]] as const
  ).filter(([, pattern]) => pattern.test(whole))
  return kinds.length > 1 ? 'mixed' : (kinds[0]?.[0] ?? '\n')
}

function checkOverrides(overrides: DialectOverrides): void {
  const { delimiter, quote, escape } = overrides
  const isChar = (c: string) => c.length === 1 && c !== '\r' && c !== '\n'
  const problems = [
    delimiter !== undefined && !isChar(delimiter) && `The delimiter must be one character, got ${JSON.stringify(delimiter)}.`,
    quote != null && !isChar(quote) && `The quote must be one character or none, got ${JSON.stringify(quote)}.`,
    escape != null && !isChar(escape) && `The escape must be one character or none, got ${JSON.stringify(escape)}.`,
    delimiter !== undefined && delimiter === quote && 'The delimiter and the quote must differ.',
  ].filter((p): p is string => typeof p === 'string')
  if (problems.length) throw Object.assign(new Error(problems.join(' ')), { code: 'INVALID_DIALECT' as const })
}


