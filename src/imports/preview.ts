import { createReadStream } from 'node:fs'
import { open } from 'node:fs/promises'
import { UserError } from '../errors.ts'
import { detectDialect, SAMPLE_BYTES, type Dialect, type DialectOverrides } from './dialect.ts'
import { READ_DEFAULTS, readRecords } from './read-records.ts'

export type Preview = { dialect: Dialect; rows: { line: number; fields: string[] }[]; error: string | null; errorCode?: string }

/** The detected dialect and the first rows as they will be parsed: a bounded read of the file's start. */
export async function previewUpload(file: string, overrides: DialectOverrides, maxRows = 10): Promise<Preview> {
  const handle = await open(file, 'r')
  let sample: Buffer
  try {
    const buffer = Buffer.alloc(SAMPLE_BYTES)
    const { bytesRead } = await handle.read(buffer, 0, SAMPLE_BYTES, 0)
    sample = buffer.subarray(0, bytesRead)
  } finally {
    await handle.close()
  }
  const dialect = detectDialect(sample, overrides)
  const rows: Preview['rows'] = []
  const stream = createReadStream(file, { start: 0, end: SAMPLE_BYTES * 4 })
  try {
    for await (const record of readRecords(stream, dialect)) {
      rows.push({ line: record.line, fields: record.fields })
      if (rows.length >= maxRows + 1) break
    }
    return { dialect, rows, error: null }
  } catch (err) {
    return { dialect, rows, error: (err as Error).message, errorCode: (err as { code?: string }).code }
  } finally {
    stream.destroy()
  }
}

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
  if (preview.errorCode === 'TOO_MANY_FIELDS' && preview.rows.length === 0) {
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
