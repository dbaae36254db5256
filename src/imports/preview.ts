import { createReadStream } from 'node:fs'
import { open } from 'node:fs/promises'
import { detectDialect, SAMPLE_BYTES, type Dialect, type DialectOverrides } from './dialect.ts'
import { readRecords } from './read-records.ts'

export type Preview = { dialect: Dialect; rows: { line: number; fields: string[] }[]; error: string | null }

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
    return { dialect, rows, error: (err as Error).message }
  } finally {
    stream.destroy()
  }
}
