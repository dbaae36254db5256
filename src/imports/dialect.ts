import iconv from 'iconv-lite'
import { byteOrderMark, detectEncoding, normalizeEncoding } from './encoding.ts'
import { detectLayout, type Layout, type LayoutOverrides, type SampleRecord } from './layout.ts'
import { createTokenizer } from './tokenizer.ts'

export type LineEnding = '\n' | '\r\n' | '\r' | 'mixed'

export type Dialect = {
  encoding: string // 'utf-8', 'utf-16le', 'utf-16be', 'windows-1252', 'iso-8859-1' or another iconv-lite name
  /** Other encodings the file also decodes in, likeliest first: the choices to offer when the text looks wrong. */
  encodingAlternatives: string[]
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

/** How much of the file structure detection (delimiter, quoting, layout) reads at each end; the encoding is judged on more (encoding.ts). */
export const SAMPLE_BYTES = 64 * 1024

// Readers of the file import these from here.
export { incompleteUtf8Tail, normalizeEncoding, utf8SequenceLength } from './encoding.ts'

const DELIMITERS = [',', ';', '\t', '|'] // earlier wins a tie
const UNLIMITED = { maxFieldBytes: Infinity, maxFields: Infinity, maxRecordLines: Infinity }

/**
 * Guess how the file is written from its first bytes (`sample`: up to HEAD_SAMPLE_BYTES for
 * the encoding, of which the first SAMPLE_BYTES for the structure; a record or a character
 * may be cut at the end) and, for a longer file, its last bytes. Overrides win over what is guessed.
 */
export function detectDialect(sample: Buffer, overrides: DialectOverrides = {}, tailSample: Buffer | null = null): Dialect {
  checkOverrides(overrides)
  const reasons: string[] = []
  const { encoding, encodingAlternatives } = chooseEncoding(sample, tailSample, overrides.encoding, reasons)
  const head = sample.subarray(0, SAMPLE_BYTES)
  // A file shorter than the encoding's sample has its end in it: the layout looks there for a footer.
  const end = tailSample ?? (sample.length > SAMPLE_BYTES ? sample.subarray(Math.max(SAMPLE_BYTES, sample.length - SAMPLE_BYTES)) : null)
  const text = iconv.decode(head, encoding) // drops the BOM; a cut character is harmless here
  const sep = /^sep=([^\r\n])(?:\r\n|\r|\n|$)/i.exec(text)
  const body = sep ? text.slice(sep[0].length) : text
  const quoting = detectQuoting(body, { ...overrides, delimiter: overrides.delimiter ?? sep?.[1] }, reasons)
  const tokenize = (part: string) => sampleRecords(part, quoting)
  const tail = end ? iconv.decode(end, encoding) : null
  const layout = detectLayout(body, tail, tokenize, overrides)
  return {
    encoding,
    encodingAlternatives,
    bom: byteOrderMark(sample) === encoding,
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

/**
 * The user's encoding if given, else the detected one; either way the reason names what
 * detection found, and the alternatives keep the detected answer on offer after an override.
 */
function chooseEncoding(sample: Buffer, tailSample: Buffer | null, chosen: string | undefined, reasons: string[]) {
  const encoding = chosen === undefined ? null : normalizeEncoding(chosen) // an unknown name fails before any work
  const guess = detectEncoding(tailSample ? [sample, tailSample] : [sample])
  if (encoding === null || encoding === guess.encoding) {
    reasons.push(`encoding ${guess.encoding}: ${encoding === null ? guess.reason : `as chosen, and as detected: ${guess.reason}`}`)
    return { encoding: guess.encoding, encodingAlternatives: guess.alternatives }
  }
  reasons.push(`encoding ${encoding}: as chosen (encoding=${encoding}); detection would read the file as ${guess.encoding}: ${guess.reason}`)
  return { encoding, encodingAlternatives: [guess.encoding, ...guess.alternatives].filter((e) => e !== encoding) }
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
  if (fixed.quote === undefined && finalQuote !== null && quoteGluesLines(text, { delimiter, quote: finalQuote, escape })) {
    reasons.push(`no quoting: read as a quote, ${finalQuote} would join lines into records of other widths, and without it every record has the same width, so ${finalQuote} is plain text here (quote=${finalQuote === '"' ? '%22' : finalQuote} forces quoting)`)
    finalQuote = null
  }
  if (fixed.quote === undefined && finalQuote !== null) {
    const { closed, broken } = quoteEvidence(text, delimiter, finalQuote)
    // Where a file quotes, quotes close at field ends; here they don't: they are text (an unquoted dump).
    if (broken > 0 && closed <= broken) {
      reasons.push(`no quoting: ${broken} field(s) start with ${finalQuote} but don't end with it at a delimiter or line end, so ${finalQuote} is plain text here (quote=${finalQuote === '"' ? '%22' : finalQuote} forces quoting)`)
      finalQuote = null
    }
  }
  if (fixed.delimiter === undefined) reasons.push(`delimiter ${(Object.hasOwn(DELIMITER_NAMES, delimiter) ? DELIMITER_NAMES[delimiter] : delimiter)}: it gives the most rows of one width`)
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

/**
 * A dump that never quotes, read with a quote: two lone " a few lines apart make one
 * well-closed quoted field that glues the lines between into one record, often of the same
 * width. Plain text it is when the quote joins lines that, read without it, are records of
 * the same width as every other: a real multi-line field breaks into short pieces. (A lone "
 * that never closes is left to the reader, which names its line and suggests quote=none.)
 */
function quoteGluesLines(text: string, quoting: Quoting): boolean {
  const plain = tokenizeSample(text, { ...quoting, quote: null, escape: null })
  const widths = new Set(plain.complete.map((r) => r.length))
  if (plain.complete.length < 2 || widths.size !== 1) return false
  return tokenizeSample(text, quoting).complete.some((record) => record.some((field) => /[\r\n]/.test(field)))
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


