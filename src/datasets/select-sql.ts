import type { Sql } from '../db/client.ts'
import { UserError } from '../errors.ts'
import { neutralizeFormulaSql } from '../spreadsheet-formulas.ts'
import { COMPARISONS, PATTERNS, type Filter, type RowQuery } from './filters.ts'
import type { Dataset } from './queries.ts'

/**
 * Double-quotes an identifier. Only ever called with names read from the catalog
 * (checked in parseRowQuery), never with raw request text.
 */
export const quoteIdent = (name: string) => `"${name.replaceAll('"', '""')}"`

/**
 * The SELECT text for a row query, for use inside COPY (which takes no bind
 * parameters). Identifiers come from the catalog; every value is quoted by
 * Postgres's own quote_literal in one round trip, so no request text is pasted
 * into SQL unquoted.
 */
export async function buildSelectSql(sql: Sql, dataset: Dataset, query: RowQuery, options: { excelSafe?: boolean } = {}): Promise<string> {
  const literals = await quoteLiterals(sql, collectValues(query.filters))
  const next = () => literals.shift()!

  const columns = query.columns.length > 0 ? query.columns : dataset.columns.map((c) => c.name)
  const output = (name: string) => {
    const category = dataset.columns.find((c) => c.name === name)?.typeCategory
    // Only strings, enums and other user-defined types can start with = + - @; numbers, dates, arrays cannot.
    if (!options.excelSafe || !['S', 'E', 'U'].includes(category ?? 'U')) return quoteIdent(name)
    return `${neutralizeFormulaSql(`${quoteIdent(name)}::text`)} as ${quoteIdent(name)}`
  }
  const lines = [`select ${columns.map(output).join(', ')}`, `from ${quoteIdent(dataset.schema)}.${quoteIdent(dataset.name)}`]
  if (query.filters.length > 0) lines.push(`where ${query.filters.map((f) => condition(f, next)).join('\n  and ')}`)
  if (query.order.length > 0) {
    lines.push(`order by ${query.order.map((o) => `${quoteIdent(o.column)} ${o.direction}${o.nulls ? ` nulls ${o.nulls}` : ''}`).join(', ')}`)
  }
  if (query.limit !== null) lines.push(`limit ${query.limit}`)
  if (query.offset !== null) lines.push(`offset ${query.offset}`)
  return lines.join('\n')
}

function condition(filter: Filter, nextLiteral: () => string): string {
  const column = quoteIdent(filter.column)
  let text: string
  switch (filter.op) {
    case 'in':
      text = filter.values.length === 0 ? 'false' : `${column} in (${filter.values.map(() => nextLiteral()).join(', ')})`
      break
    case 'is':
      text = `${column} is ${filter.value === 'not_null' ? 'not null' : filter.value}`
      break
    case 'like':
    case 'ilike':
    case 'match':
    case 'imatch':
      // Cast so a pattern works on any column type, as a person reading the CSV would expect.
      text = `${column}::text ${PATTERNS[filter.op]} ${nextLiteral()}`
      break
    default:
      text = `${column} ${COMPARISONS[filter.op]} ${nextLiteral()}`
  }
  return filter.negate ? `not (${text})` : text
}

function collectValues(filters: Filter[]): string[] {
  return filters.flatMap((f) => (f.op === 'in' ? f.values : f.op === 'is' ? [] : [f.value]))
}

async function quoteLiterals(sql: Sql, values: string[]): Promise<string[]> {
  if (values.length === 0) return []
  if (values.some((v) => v.includes('\0'))) throw new UserError('BAD_FILTER', 'a filter value contains a NUL character, which PostgreSQL text cannot hold')
  const rows = await sql<{ quoted: string }[]>`
    select quote_literal(value) as quoted
    from unnest(${sql.array(values)}::text[]) with ordinality as v(value, position)
    order by position
  `
  return rows.map((r) => r.quoted)
}

/**
 * Plans the query without running it: a value that does not fit its column's type
 * (age=eq.abc) is a 400 now rather than a failed task later. Returns the planner's
 * row estimate, used as the export's expected total.
 */
export async function planSelect(sql: Sql, selectSql: string, signal?: AbortSignal): Promise<number> {
  try {
    signal?.throwIfAborted()
    // Safe: selectSql comes from buildSelectSql (catalog identifiers, Postgres-quoted literals).
    const explain = (tx: Sql) => cancelOnAbort(tx.unsafe(`explain (format json) ${selectSql}`), signal)
    // Inside a transaction already (as the requester's role), `begin` is not there: EXPLAIN runs nothing anyway.
    const [row] = typeof sql.begin === 'function' ? await sql.begin('read only', (tx) => explain(tx as unknown as Sql)) : await explain(sql)
    const plan = (row as unknown as { 'QUERY PLAN': [{ Plan: { 'Plan Rows': number } }] })['QUERY PLAN'][0].Plan
    return Math.max(0, Math.round(plan['Plan Rows']))
  } catch (err) {
    if (signal?.aborted) throw signal.reason
    const code = (err as { code?: string }).code ?? ''
    if (code.startsWith('22') || code.startsWith('42')) {
      throw new UserError('BAD_FILTER', `The filters do not fit the columns: ${(err as Error).message}`, 400)
    }
    throw err
  }
}

/** Planning can be slow (the planner runs immutable functions, regexes over statistics): stop it with the client. */
async function cancelOnAbort<T>(query: PromiseLike<T> & { cancel(): unknown }, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return await query
  const cancel = () => void query.cancel()
  signal.addEventListener('abort', cancel, { once: true })
  try {
    return await query
  } finally {
    signal.removeEventListener('abort', cancel)
  }
}
