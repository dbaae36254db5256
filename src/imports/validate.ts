import type { Sql } from '../db/client.ts'
import { quoteIdent } from '../datasets/index.ts'
import type { ImportMode } from './options.ts'
import type { CsvRecord } from './read-records.ts'
import type { Target, TargetColumn } from './target.ts'

// Set-wise validation of the staged rows (every value text, in c1..cN, with the
// line it came from). Each step adds (line, message) pairs to sluice_errors and
// looks only at rows without an error yet. Only our own identifiers (c1..cN,
// catalog names) appear in the SQL; names, phrases and type names shown to the
// user travel as parameters.

export type Mapped = { column: TargetColumn; staged: string } // staged: c1, c2...
export const STAGING = 'sluice_staging'
export const ERRORS = 'sluice_errors'

const stillValid = `not exists (select 1 from ${ERRORS} e where e.line = s.line)`
// The planner may evaluate a join's casts before a WHERE filter: checks that cast read
// from this materialized set of rows that passed every check so far, never from staging.
const VALID = `valid_rows as materialized (select * from ${STAGING} s where ${stillValid})`

/** `cast(c3 as date)`: the type text comes from the catalog (format_type), never from a request. */
export const castOf = (m: Mapped) => `cast(s.${m.staged} as ${m.column.type})`

export async function validateStaged(tx: Sql, target: Target, mapped: Mapped[], mode: ImportMode, key: string[]): Promise<void> {
  await checkValues(tx, mapped)
  const byName = new Map(mapped.map((m) => [m.column.name, m]))
  // An upsert updates the rows its key finds; every other unique key must still not collide
  // with a row the upsert leaves alone (PostgreSQL would fail the whole statement).
  const sameKey = (u: string[]) => u.length === key.length && u.every((c) => key.includes(c))
  const keys = mode === 'upsert' ? [key, ...target.uniqueKeys.filter((u) => !sameKey(u))] : target.uniqueKeys
  const keyParts = key.map((name) => byName.get(name))
  for (const unique of keys) {
    const parts = unique.map((name) => byName.get(name))
    if (parts.some((p) => !p)) continue // a column left to its default cannot collide within the file
    await checkDuplicatesInFile(tx, parts as Mapped[])
    if (mode === 'insert') await checkExistingRows(tx, target, parts as Mapped[], null)
    if (mode === 'upsert' && !sameKey(unique) && keyParts.every((p) => p)) await checkExistingRows(tx, target, parts as Mapped[], keyParts as Mapped[])
  }
  for (const fk of target.foreignKeys) {
    const parts = fk.columns.map((name) => byName.get(name))
    if (parts.some((p) => !p)) continue
    await checkForeignKey(tx, fk, parts as Mapped[])
  }
  for (const check of target.checks) {
    const names = target.columns.map((c) => c.name).filter((n) => check.expression.includes(n))
    if (!names.every((n) => byName.has(n))) continue // it reads a column the file leaves to its default
    await checkConstraint(tx, check, mapped)
  }
}

/**
 * Types, lengths, enums and NOT NULL, for every mapped column, in one pass over the staging table.
 * A column the reader pre-checked (`precheckRow`) is tested only in the rows it flagged: the
 * messages still come from here, so they are the same whichever rows were flagged.
 */
async function checkValues(tx: Sql, mapped: Mapped[]) {
  const params: unknown[] = []
  const param = (value: unknown) => `$${params.push(value)}`
  const checks = ['s.ragged']
  const onlyFlagged = mapped.every((m) => isPrechecked(m.column))
  for (const m of mapped) {
    if (!m.column.notNull && acceptsAnyText(m.column)) continue // nothing to check: every parameter must be used
    const name = param(m.column.name)
    const flagged = isPrechecked(m.column) && !onlyFlagged ? 's.flagged and ' : ''
    if (m.column.notNull) checks.push(`case when ${flagged}s.${m.staged} is null then format('column "%s" is required but empty', ${name}::text) end`)
    if (acceptsAnyText(m.column)) continue
    checks.push(`case when ${flagged}s.${m.staged} is not null and not pg_input_is_valid(s.${m.staged}, ${param(m.column.type)}::text)
      then format('column "%s": "%s" %s', ${name}::text, left(s.${m.staged}, 100), ${param(phrase(m.column))}::text) end`)
  }
  await tx.unsafe(`
    insert into ${ERRORS} (line, message)
    select line, message
    from (select s.line, unnest(array[${checks.join(',\n      ')}]) as message from ${STAGING} s ${onlyFlagged ? 'where s.flagged' : ''}) found
    where message is not null`, params as never[])
}

// The reader's pre-check: a value in one of these plain forms is surely valid for its type
// (pg_input_is_valid would say true); anything else, however valid, is left to checkValues.
// Tests here may only err towards "look at it in SQL", never towards "valid".
type ValueTest = (value: string) => boolean
const INTEGER = /^-?\d{1,18}$/
const DECIMAL = /^-?(\d{1,300})(?:\.(\d{1,300}))?$/
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const BOOLEANS = new Set(['t', 'f', 'true', 'false', 'y', 'n', 'yes', 'no', 'on', 'off', '1', '0'])
const DAYS = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]

const integerUpTo = (digits: number): ValueTest => (v) => INTEGER.test(v) && v.length - (v[0] === '-' ? 1 : 0) <= digits

function decimalTest(type: string): ValueTest {
  const typmod = /^numeric\((\d+),(\d+)\)$/.exec(type)
  const whole = typmod ? Number(typmod[1]) - Number(typmod[2]) : 1000
  const scale = typmod ? Number(typmod[2]) : 1000 // more fraction digits round, which may carry: left to SQL
  return (v) => {
    const m = DECIMAL.exec(v)
    return m !== null && (m[1]!.length <= whole || m[1]!.replace(/^0+/, '').length <= whole) && (m[2]?.length ?? 0) <= scale
  }
}

function isoDate(v: string): boolean {
  // By character codes: a regex match and three Number() calls per value cost more than the rest of the row.
  if (v.length !== 10 || v.charCodeAt(4) !== 45 || v.charCodeAt(7) !== 45) return false
  const digits = (from: number, to: number) => {
    let n = 0
    for (let i = from; i < to; i++) {
      const d = v.charCodeAt(i) - 48
      if (d < 0 || d > 9) return -1
      n = n * 10 + d
    }
    return n
  }
  const year = digits(0, 4)
  const month = digits(5, 7)
  const day = digits(8, 10)
  if (year < 1 || month < 1 || month > 12 || day < 1 || day > DAYS[month - 1]!) return false
  return month !== 2 || day < 29 || (year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0))
}

function fastTestOf(c: TargetColumn): ValueTest | null {
  if (c.enumLabels) {
    const labels = new Set(c.enumLabels)
    return (v) => labels.has(v)
  }
  if (c.type === 'smallint') return integerUpTo(4)
  if (c.type === 'integer') return integerUpTo(9)
  if (c.type === 'bigint') return integerUpTo(18)
  if (c.typeName === 'numeric' && /^numeric(\(\d+,\d+\))?$/.test(c.type)) return decimalTest(c.type)
  if (c.type === 'double precision') return (v) => DECIMAL.test(v) && v.length <= 30
  if (c.type === 'date') return isoDate
  if (c.type === 'boolean') return (v) => BOOLEANS.has(v) || BOOLEANS.has(v.toLowerCase())
  if (c.type === 'uuid') return (v) => UUID.test(v)
  const length = /^character varying\((\d+)\)$/.exec(c.type)
  if (length) return (v) => v.length <= Number(length[1]) // UTF-16 units: never fewer than characters
  return null
}

const isPrechecked = (c: TargetColumn) => acceptsAnyText(c) || fastTestOf(c) !== null

/**
 * Says whether a record needs checkValues' look: it has a problem of its own, an empty value
 * in a NOT NULL column, or a value the plain forms above do not vouch for. The reader flags
 * rows with it as it stages them, so a clean row costs no SQL check at all.
 */
export function createRowPrecheck(mapped: Mapped[]): (record: CsvRecord) => boolean {
  const columns = mapped.filter((m) => isPrechecked(m.column) && (m.column.notNull || !acceptsAnyText(m.column)))
    .map((m) => ({ index: Number(m.staged.slice(1)) - 1, notNull: m.column.notNull, test: fastTestOf(m.column) }))
  return (record) => {
    const { fields, quotedEmpty } = record
    for (const { index, notNull, test } of columns) {
      const value = fields[index]
      if (value === undefined || (value === '' && !quotedEmpty.includes(index))) {
        if (notNull) return true
        continue
      }
      if (test !== null && !test(value)) return true
    }
    return false
  }
}

async function checkDuplicatesInFile(tx: Sql, parts: Mapped[]) {
  const columns = parts.map((p) => p.column.name).join(', ')
  // Only the line and the key are materialized: copying whole staged rows cost more than the sort.
  await tx.unsafe(`
    insert into ${ERRORS} (line, message)
    with valid_keys as materialized (
      select s.line, ${parts.map((p) => `s.${p.staged}`).join(', ')} from ${STAGING} s
      where ${stillValid} and ${parts.map((p) => `s.${p.staged} is not null`).join(' and ')})
    select line, format('duplicate key (%s) = (%s): the same key is on line %s', $1::text, shown, first_line)
    from (
      select s.line, concat_ws(', ', ${parts.map((p) => `s.${p.staged}`).join(', ')}) as shown,
             min(s.line) over same_key as first_line
      from valid_keys s
      window same_key as (partition by ${parts.map(castOf).join(', ')})
    ) d
    where line <> first_line`, [columns])
}

/** Rows whose unique key already exists; with `except` (an upsert's key), only in rows that key does not match. */
async function checkExistingRows(tx: Sql, target: Target, parts: Mapped[], except: Mapped[] | null) {
  const columns = parts.map((p) => p.column.name).join(', ')
  const hint = except ? `in a row with another ${except.map((p) => p.column.name).join(', ')}` : 'in the table; use mode=upsert to update it'
  const otherRow = except ? ` and not (${except.map((p) => `t.${quoteIdent(p.column.name)} is not distinct from ${castOf(p)}`).join(' and ')})` : ''
  await tx.unsafe(`
    insert into ${ERRORS} (line, message)
    with ${VALID}
    select s.line, format('a row with (%s) = (%s) already exists %s', $1::text, concat_ws(', ', ${parts.map((p) => `s.${p.staged}`).join(', ')}), $2::text)
    from valid_rows s
    where exists (select 1 from ${quoteIdent(target.schema)}.${quoteIdent(target.name)} t
                  where ${parts.map((p) => `t.${quoteIdent(p.column.name)} = ${castOf(p)}`).join(' and ')}${otherRow})`, [columns, hint])
}

async function checkForeignKey(tx: Sql, fk: Target['foreignKeys'][number], parts: Mapped[]) {
  await tx.unsafe(`
    insert into ${ERRORS} (line, message)
    with ${VALID}
    select s.line, format('(%s) = (%s) does not exist in %s', $1::text, concat_ws(', ', ${parts.map((p) => `s.${p.staged}`).join(', ')}), $2::text)
    from valid_rows s
    where ${parts.map((p) => `s.${p.staged} is not null`).join(' and ')}
      and not exists (select 1 from ${quoteIdent(fk.refSchema)}.${quoteIdent(fk.refTable)} r
                      where ${parts.map((p, i) => `r.${quoteIdent(fk.refColumns[i]!)} = ${castOf(p)}`).join(' and ')})`,
  [fk.columns.join(', '), `${fk.refTable} (${fk.refColumns.join(', ')})`])
}

/** Evaluates the table's own CHECK expression (catalog text) over the typed row. */
async function checkConstraint(tx: Sql, check: Target['checks'][number], mapped: Mapped[]) {
  await tx.unsafe(`
    insert into ${ERRORS} (line, message)
    with ${VALID}
    select line, format('breaks the rule %s: %s', $1::text, $2::text)
    from (select s.line, ${mapped.map((m) => `${castOf(m)} as ${quoteIdent(m.column.name)}`).join(', ')}
          from valid_rows s) typed
    where (${check.expression}) is false`, [check.name, check.expression])
}

const acceptsAnyText = (c: TargetColumn) => ['text', 'varchar', 'bpchar', 'name', 'citext'].includes(c.typeName) && !/\(\d+\)/.test(c.type)

/** How a person would say what is wrong with a value for this column. */
export function phrase(c: TargetColumn): string {
  if (c.enumLabels) return `is not one of: ${c.enumLabels.join(', ')}`
  switch (c.typeName) {
    case 'date': return 'is not a date (write YYYY-MM-DD)'
    case 'timestamp': case 'timestamptz': return 'is not a date and time (write YYYY-MM-DD HH:MM:SS)'
    case 'time': case 'timetz': return 'is not a time of day (write HH:MM:SS)'
    case 'int2': case 'int4': case 'int8': return `is not a whole number that fits ${c.type}`
    case 'numeric': return `is not a number that fits ${c.type}`
    case 'float4': case 'float8': return 'is not a number'
    case 'bool': return 'is not true or false'
    case 'uuid': return 'is not a UUID'
    case 'json': case 'jsonb': return 'is not valid JSON'
    case 'varchar': case 'bpchar': return `is longer than ${c.type} allows`
  }
  if (c.category === 'A') return `is not a list such as {a,b} for ${c.type}`
  return `is not a valid ${c.type}`
}
