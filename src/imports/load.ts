import { Readable } from 'node:stream'
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
