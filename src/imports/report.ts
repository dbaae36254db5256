import { createWriteStream } from 'node:fs'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { stringify } from 'csv-stringify'
import type { Sql } from '../db/client.ts'
import { neutralizeFormula } from '../spreadsheet-formulas.ts'
import { FILE_MODE, measureFile, type Storage } from '../storage/index.ts'
import { ERRORS, STAGING } from './validate.ts'

export type ReportFile = { key: string; name: string; size: number; sha256: string }

/**
 * The rows that failed, as the file had them, with `line` and `error` columns at
 * the end: fix them in a spreadsheet, delete those two columns, upload again.
 * Read through a cursor (not COPY TO, which can leave a postgres.js connection
 * stuck), so it streams however many rows failed.
 */
export async function writeErrorReport(tx: Sql, storage: Storage, dataset: string, header: string[], width: number): Promise<ReportFile> {
  const columns = Array.from({ length: width }, (_, i) => `s.c${i + 1}`).join(', ')
  const cursor = tx.unsafe(`
    select ${columns}, s.line, e.message
    from ${STAGING} s
    join (select line, string_agg(message, '; ' order by message) as message from ${ERRORS} group by line) e using (line)
    order by s.line`).values().cursor(1000)

  async function* rows() {
    yield [...header, 'line', 'error']
    for await (const batch of cursor) for (const row of batch) yield row.map(neutralizeFormula)
  }

  const tempPath = storage.newTempPath()
  const key = storage.newKey('reports', '.csv')
  const measure = measureFile()
  try {
    await pipeline(Readable.from(rows()), stringify({ cast: { number: String } }), measure, createWriteStream(tempPath, { mode: FILE_MODE }))
    await storage.commit(tempPath, key)
  } catch (err) {
    await storage.remove(tempPath)
    throw err
  }
  return { key, name: `${dataset}-errors-${new Date().toISOString().slice(0, 10)}.csv`, size: measure.size(), sha256: measure.sha256() }
}
