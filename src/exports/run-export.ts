import { createWriteStream } from 'node:fs'
import { Readable, Transform, type TransformCallback } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGzip } from 'node:zlib'
import type { Sql } from '../db/client.ts'
import { buildSelectSql, findDataset, parseRowQuery } from '../datasets/index.ts'
import { UserError } from '../errors.ts'
import { FILE_MODE, measureFile, type Storage } from '../storage/index.ts'
import type { ProgressTracker } from '../tasks/progress.ts'
import type { TaskRow } from '../tasks/queries.ts'
import { EXPORT_OPTION_KEYS, type ExportParams } from './params.ts'

export type ExportFile = { key: string; name: string; size: number; sha256: string; rows: number; bytes: number }

/**
 * Streams the query's rows through COPY into a temp file (gzipped if asked), then
 * renames it into storage. `reader` is a read-only session of its own (an export
 * can never write, whatever a view calls), used for nothing after the COPY and
 * closed by the caller: postgres.js can leave a connection's socket paused when a
 * COPY stream ends under backpressure (porsager/postgres#499, fix not released),
 * and the next query on it would hang. Memory stays flat: nothing holds more than a chunk.
 */
export async function writeExport(reader: Sql, storage: Storage, schema: string, task: TaskRow, tracker: ProgressTracker): Promise<ExportFile> {
  const params = task.params as ExportParams
  const dataset = await findDataset(reader, schema, task.dataset)
  if (!dataset) throw new UserError('DATASET_NOT_FOUND', `The dataset "${task.dataset}" no longer exists or may no longer be read.`, 404)
  // Parsed again against today's columns: one that was dropped since the request fails clearly.
  const query = parseRowQuery(params.query, dataset, EXPORT_OPTION_KEYS)
  const selectSql = await buildSelectSql(reader, dataset, query, { excelSafe: params.excelSafe === true })

  const tempPath = storage.newTempPath()
  const key = storage.newKey('exports', params.gzip ? '.csv.gz' : '.csv')
  const counter = batchAndCountRecords(tracker)
  const hashing = measureFile()

  let stopQuery: (() => void) | null = null
  try {
    // Safe: selectSql holds catalog identifiers and Postgres-quoted literals only.
    tracker.signal.throwIfAborted()
    const copy = copyOut(reader, `copy (${selectSql}) to stdout with (format csv, header true, encoding 'UTF8')`)
    // Cancel reaches the query itself, at any stage: a COPY whose query has not produced
    // its first row yet sends nothing, and the pipeline's abort alone would wait for that.
    stopQuery = () => void copy.cancel()
    tracker.signal.addEventListener('abort', stopQuery, { once: true })
    const rows = await copy.readable()
    const stages = params.gzip ? [rows, counter, createGzip({ level: 6 }), hashing] : [rows, counter, hashing]
    await pipeline([...stages, createWriteStream(tempPath, { mode: FILE_MODE })], { signal: tracker.signal })
    await storage.commit(tempPath, key)
  } catch (err) {
    await storage.remove(tempPath)
    throw tracker.signal.aborted ? tracker.signal.reason : err
  } finally {
    if (stopQuery) tracker.signal.removeEventListener('abort', stopQuery)
  }
  return { key, name: exportFileName(dataset.name, params.gzip), size: hashing.size(), sha256: hashing.sha256(), rows: counter.records(), bytes: tracker.progress.bytes }
}

/**
 * COPY TO as a stream, with an error listener on it from the moment postgres.js makes
 * it. An error that arrives in the same network read as the start of the COPY (a view
 * that fails on its first rows) is emitted on the next tick, before `await readable()`
 * returns: with no listener, Node throws it and the worker thread dies. The pipeline
 * still sees the error, through the stream's `errored` state. This relies on the
 * query's `resolve` property (postgres.js 3.4 internals): re-run the export tests
 * when upgrading postgres.
 */
function copyOut(reader: Sql, text: string) {
  const query = reader.unsafe(text)
  const internals = query as unknown as { resolve: (value: unknown) => void }
  const resolve = internals.resolve
  internals.resolve = (value) => {
    if (value instanceof Readable) value.on('error', () => {})
    resolve(value)
  }
  return query
}

const BATCH_BYTES = 256 * 1024
const BATCH_MS = 250 // a slow query still shows progress

/**
 * Postgres sends COPY output as one message per row (the header line first), and
 * postgres.js hands each message on as one chunk: counting chunks counts rows
 * exactly, without scanning the bytes. Passing those ~100-byte chunks one by one
 * to gzip, the hash and the file costs a call each and made gzip exports crawl at
 * 1 MB/s, so they are joined into 256 KiB batches (or a quarter second's worth).
 */
function batchAndCountRecords(tracker: ProgressTracker) {
  let messages = 0
  let parts: Buffer[] = []
  let pending = 0
  let lastEmit = Date.now()
  const { progress } = tracker
  const rows = () => Math.max(0, messages - 1) // the header line is not a row

  const emit = (stream: Transform) => {
    const batch = parts.length === 1 ? parts[0]! : Buffer.concat(parts, pending)
    parts = []
    pending = 0
    lastEmit = Date.now()
    progress.bytes += batch.length
    progress.rows = rows()
    if (progress.total) progress.percent = Math.min(99, (progress.rows / Math.max(progress.total, 1)) * 100)
    stream.push(batch)
  }

  const stream = new Transform({
    transform(chunk: Buffer, _encoding, done: TransformCallback) {
      messages++
      parts.push(chunk)
      pending += chunk.length
      if (pending >= BATCH_BYTES || Date.now() - lastEmit >= BATCH_MS) emit(this)
      done()
    },
    flush(done: TransformCallback) {
      if (pending > 0) emit(this)
      done()
    },
  })
  return Object.assign(stream, { records: rows })
}

/** `contacts-2026-11-22.csv`: what a person expects to find in their downloads folder. */
export function exportFileName(dataset: string, gzip: boolean): string {
  return `${dataset}-${new Date().toISOString().slice(0, 10)}.csv${gzip ? '.gz' : ''}`
}
