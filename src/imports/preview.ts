import { createReadStream } from 'node:fs'
import { open } from 'node:fs/promises'
import iconv from 'iconv-lite'
import { UserError } from '../errors.ts'
import { detectDialect, SAMPLE_BYTES, type Dialect, type DialectOverrides } from './dialect.ts'
import { physicalLines } from './layout.ts'
import { newLineAccount, READ_DEFAULTS, readRecords } from './read-records.ts'
import { readSamples } from './samples.ts'

/** What each physical line of the file is used as. */
export type LineUse = 'sep' | 'skipped' | 'header' | 'blank' | 'comment' | 'data' | 'footer'

/** One physical line as decoded. `line` is null where the file is too long to number its end in a preview. */
export type PreviewLine = { line: number | null; use: LineUse; text: string }

export type Preview = {
  dialect: Dialect
  /** The columns as the import names them: the header's cells (joined for a two-line header), or column_N. */
  columnNames: string[]
  /** The first data rows as they will load, with the problem that would fail each, if any. */
  rows: { line: number; fields: string[]; problem: string | null }[]
  /** The file's first lines up to the rows shown, each with its use: what is skipped is visible. */
  head: PreviewLine[]
  /** The file's last lines, the footer among them. */
  tail: PreviewLine[]
  error: string | null
  errorCode?: string
}

const SHOWN_LINE_CHARS = 300
const MAX_HEAD_LINES = 80
const TAIL_LINES = 5 // shown besides the footer

/**
 * The detected dialect and layout, and the file's start and end as the import will read
 * them: a bounded read (the samples, and at most four samples' worth of records).
 */
export async function previewUpload(file: string, overrides: DialectOverrides, maxRows = 10): Promise<Preview> {
  const samples = await readSamples(file)
  const dialect = detectDialect(samples.head, overrides, samples.tail)
  const rows: Preview['rows'] = []
  const spans: { line: number; lines: number; use: 'header' | 'data' }[] = []
  const stream = createReadStream(file, { start: 0, end: SAMPLE_BYTES * 4 })
  let error: string | null = null
  let errorCode: string | undefined
  try {
    let headerSeen = !dialect.header
    for await (const record of readRecords(stream, dialect, { account: newLineAccount() })) {
      spans.push({ line: record.line, lines: record.lines, use: headerSeen ? 'data' : 'header' })
      if (headerSeen) rows.push({ line: record.line, fields: record.fields, problem: record.problem })
      headerSeen = true
      if (rows.length >= maxRows) break
    }
  } catch (err) {
    error = (err as Error).message
    errorCode = (err as { code?: string }).code
  } finally {
    stream.destroy()
  }
  const headText = decodeSample(samples.head, dialect)
  const last = spans.at(-1)
  const headUntil = Math.min(MAX_HEAD_LINES, last ? last.line + last.lines - 1 : MAX_HEAD_LINES)
  const head = physicalLines(headText).slice(0, headUntil).map((text, i) => ({ line: i + 1, use: useOf(i + 1, text, dialect, spans), text: shown(text) }))
  return { dialect, columnNames: dialect.columnNames, rows, head, tail: tailLines(samples.tail, headText, dialect), error, errorCode }
}

function useOf(line: number, text: string, dialect: Dialect, spans: { line: number; lines: number; use: 'header' | 'data' }[]): LineUse {
  const sep = dialect.sepLine ? 1 : 0
  if (line <= sep) return 'sep'
  if (line <= sep + dialect.skipLines) return 'skipped'
  const span = spans.find((s) => line >= s.line && line < s.line + s.lines)
  if (span) return span.use
  return dialect.comment !== null && text.startsWith(dialect.comment) ? 'comment' : 'blank'
}

/** The last lines: numbered when the whole file was in the head sample, else counted from the end. */
function tailLines(tail: Buffer | null, headText: string, dialect: Dialect): PreviewLine[] {
  const whole = tail === null
  let lines = physicalLines(whole ? headText : decodeSample(tail, dialect))
  if (!whole) lines = lines.slice(1) // the tail starts mid-line
  const count = Math.min(lines.length, dialect.footerLines + TAIL_LINES)
  const from = lines.length - count
  return lines.slice(from).map((text, i) => ({
    line: whole ? from + i + 1 : null,
    use: from + i >= lines.length - dialect.footerLines ? 'footer' : 'data',
    text: shown(text),
  }))
}

function decodeSample(sample: Buffer, dialect: Dialect): string {
  try {
    return iconv.decode(sample, dialect.encoding) // iconv strips a BOM
  } catch {
    return ''
  }
}

const shown = (text: string) => (text.length > SHOWN_LINE_CHARS ? `${text.slice(0, SHOWN_LINE_CHARS)}…` : text)

/**
 * Refuses a file whose first record has more fields than the reader takes (a header of
 * a million commas), while the request is still open, so it is never stored or queued.
 * Anything else the start of the file may hold (a cut quote, an odd encoding) is the
 * import's to report, with its line.
 */
export async function refuseFieldCountBomb(file: string, overrides: DialectOverrides): Promise<void> {
  // Detection costs a few hundred milliseconds of this thread: first a byte count that
  // only a line with more delimiters than the reader takes can pass.
  if (!(await firstLineIsTooWide(file, overrides.delimiter))) return
  let preview: Preview
  try {
    preview = await previewUpload(file, overrides, 0)
  } catch {
    return // detection failed: the task says why
  }
  if (preview.errorCode === 'TOO_MANY_FIELDS') {
    throw new UserError('TOO_MANY_FIELDS', `The file cannot be imported: ${preview.error}`, 400)
  }
}

async function firstLineIsTooWide(file: string, delimiter: string | undefined): Promise<boolean> {
  const handle = await open(file, 'r')
  let start: Buffer
  try {
    const buffer = Buffer.alloc(SAMPLE_BYTES * 4)
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0)
    start = buffer.subarray(0, bytesRead)
  } finally {
    await handle.close()
  }
  const counts = new Uint32Array(256)
  for (const byte of start) {
    if (byte === 10 || byte === 13) break
    counts[byte]!++
  }
  const candidates = [',', ';', '\t', '|', ...(delimiter && delimiter.charCodeAt(0) < 128 ? [delimiter] : [])]
  return candidates.some((c) => counts[c.charCodeAt(0)]! > READ_DEFAULTS.maxFields)
}
