import { createReadStream } from 'node:fs'
import { Readable, Transform } from 'node:stream'
import type { Sql } from '../db/client.ts'
import { quoteIdent } from '../datasets/index.ts'
import type { ImportMode } from './options.ts'
import type { Target } from './target.ts'
import { castOf, ERRORS, STAGING, type Mapped } from './validate.ts'

export type LoadCounts = { inserted: number; updated: number; deleted: number }

/**
 * Sends a stream into `copy ... from stdin`, failing (never hanging) when the
 * server rejects the data.
 *
 * postgres.js resolves a COPY query with its stream as soon as COPY starts, so an
 * error the server sends later has no promise left to reject; and once the stream
 * has ended, the stream cannot carry it either, so the query would wait forever.
 * We take the query's late `reject` ourselves: every server error reaches us.
 */
export async function copyIn(tx: Sql, copySql: string, source: Readable, signal: AbortSignal): Promise<void> {
  const query = tx.unsafe(copySql)
  const sink = await query.writable()
  let fail: (err: unknown) => void = () => {}
  const serverError = new Promise<never>((_, reject) => { fail = reject })
  ;(query as unknown as { reject: (err: unknown) => void }).reject = (err) => fail(err)
  // The rows may all be sent and the server still busy with them: cancel the statement itself.
  const onAbort = () => {
    source.destroy(signal.reason)
    void (query as unknown as { cancel: () => unknown }).cancel()
    fail(signal.reason)
  }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    signal.throwIfAborted()
    await Promise.race([
      new Promise<void>((resolve, reject) => {
        source.on('error', (err) => { sink.destroy(err); reject(err) })
        sink.on('error', reject)
        // 'finish' waits for CommandComplete: the server has taken every row.
        source.pipe(sink).on('finish', resolve)
      }),
      serverError,
    ])
  } catch (err) {
    source.destroy()
    sink.destroy()
    throw signal.aborted ? signal.reason : err
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

/** Moves the rows without errors from staging into the table, as the mode says, in one statement each. */
export async function mergeStaged(tx: Sql, target: Target, mapped: Mapped[], mode: ImportMode, key: string[]): Promise<LoadCounts> {
  const table = `${quoteIdent(target.schema)}.${quoteIdent(target.name)}`
  const columns = mapped.map((m) => quoteIdent(m.column.name)).join(', ')
  const overriding = mapped.some((m) => m.column.identityAlways) ? 'overriding system value' : ''
  const select = `select ${mapped.map(castOf).join(', ')}
    from (select * from ${STAGING} s where not exists (select 1 from ${ERRORS} e where e.line = s.line) offset 0) s
    order by s.line` // offset 0: filter first, cast after
  let deleted = 0
  if (mode === 'replace') deleted = (await tx.unsafe(`delete from ${table}`)).count
  if (mode !== 'upsert') {
    const inserted = (await tx.unsafe(`insert into ${table} (${columns}) ${overriding} ${select}`)).count
    return { inserted, updated: 0, deleted }
  }
  const updates = mapped.filter((m) => !key.includes(m.column.name)).map((m) => `${quoteIdent(m.column.name)} = excluded.${quoteIdent(m.column.name)}`)
  const [counts] = await tx.unsafe(`
    with merged as (
      insert into ${table} (${columns}) ${overriding} ${select}
      on conflict (${key.map(quoteIdent).join(', ')}) do ${updates.length ? `update set ${updates.join(', ')}` : 'nothing'}
      returning (xmax = 0) as inserted
    )
    select count(*) filter (where inserted)::int as inserted, count(*) filter (where not inserted)::int as updated from merged`)
  return { inserted: counts!.inserted, updated: counts!.updated, deleted }
}

/**
 * Loads the spooled rows (`line<TAB>values` in COPY's text format, in file order) into the
 * table with one COPY, leaving out every line with an error: validation has already found
 * each row that would fail, so the COPY does not. As fast as COPY is: INSERT ... SELECT from
 * staging inserts row by row and took twice as long.
 */
export async function copySpooled(tx: Sql, target: Target, mapped: Mapped[], mode: ImportMode, spool: string, signal: AbortSignal): Promise<LoadCounts> {
  const table = `${quoteIdent(target.schema)}.${quoteIdent(target.name)}`
  const columns = mapped.map((m) => quoteIdent(m.column.name)).join(', ')
  const failing = await failingLines(tx)
  const deleted = mode === 'replace' ? (await tx.unsafe(`delete from ${table}`)).count : 0
  const rows = { kept: 0 }
  const source = createReadStream(spool, { highWaterMark: 256 * 1024 }).pipe(withoutLines(failing, rows))
  await copyIn(tx, `copy ${table} (${columns}) from stdin`, source, signal)
  return { inserted: rows.kept, updated: 0, deleted }
}

/** The lines with an error, ascending: 4 bytes each, read in pages (a file of bad rows has many). */
async function failingLines(tx: Sql): Promise<Int32Array> {
  let lines = new Int32Array(1024)
  let count = 0
  const cursor = tx.unsafe(`select distinct line from ${ERRORS} order by line`).values().cursor(10_000)
  for await (const page of cursor as AsyncIterable<[number][]>) {
    if (count + page.length > lines.length) {
      const grown = new Int32Array(Math.max(lines.length * 2, count + page.length))
      grown.set(lines.subarray(0, count))
      lines = grown
    }
    for (const [line] of page) lines[count++] = line
  }
  return lines.subarray(0, count)
}

/** Drops the spooled rows whose line is in `failing` (ascending), and the line prefix of the others. */
function withoutLines(failing: Int32Array, rows: { kept: number }): Transform {
  let carry: Buffer | null = null
  let next = 0 // the first failing line not yet passed
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      const bytes = carry ? Buffer.concat([carry, chunk]) : chunk
      const kept: Buffer[] = []
      let start = 0
      for (let end = bytes.indexOf(10, start); end >= 0; end = bytes.indexOf(10, start)) {
        let line = 0
        let at = start
        for (; bytes[at] !== 9; at++) line = line * 10 + bytes[at]! - 48
        while (next < failing.length && failing[next]! < line) next++
        if (next >= failing.length || failing[next] !== line) {
          kept.push(bytes.subarray(at + 1, end + 1))
          rows.kept++
        }
        start = end + 1
      }
      carry = start < bytes.length ? Buffer.from(bytes.subarray(start)) : null
      done(null, kept.length > 0 ? Buffer.concat(kept) : undefined)
    },
    flush(done) {
      done(carry ? new Error('the spool file ends inside a row') : null)
    },
  })
}
