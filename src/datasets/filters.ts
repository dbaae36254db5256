import { UserError } from '../errors.ts'
import type { Dataset } from './queries.ts'

// PostgREST's query syntax, which people already know:
//   select=a,b  order=a.desc,b.asc.nullslast  col=op.value  not.op.value  limit=  offset=
// Every name is checked against the dataset's columns here; values stay strings
// until Postgres itself quotes them (see select-sql.ts).

export const COMPARISONS = { eq: '=', neq: '<>', gt: '>', gte: '>=', lt: '<', lte: '<=' } as const
export const PATTERNS = { like: 'like', ilike: 'ilike', match: '~', imatch: '~*' } as const
export const IS_VALUES = ['null', 'not_null', 'true', 'false', 'unknown'] as const
export const OPERATORS = [...Object.keys(COMPARISONS), ...Object.keys(PATTERNS), 'in', 'is'] as const

export type Filter =
  | { column: string; negate: boolean; op: keyof typeof COMPARISONS | keyof typeof PATTERNS; value: string }
  | { column: string; negate: boolean; op: 'in'; values: string[] }
  | { column: string; negate: boolean; op: 'is'; value: (typeof IS_VALUES)[number] }

export type OrderTerm = { column: string; direction: 'asc' | 'desc'; nulls: 'first' | 'last' | null }

export type RowQuery = {
  columns: string[]
  filters: Filter[]
  order: OrderTerm[]
  limit: number | null
  offset: number | null
}

const RESERVED = ['select', 'order', 'limit', 'offset'] as const

// Bounds on a row query, so that no request can make parsing, quoting or planning costly
// (README, "Limits"). The patterns' cap and the refusal of back-references keep
// PostgreSQL's regex engine, which the planner also runs over a column's statistics
// while it plans, out of exponential work; the statement timeout is the backstop.
export const QUERY_LIMITS = {
  valueChars: 10_000,
  patternChars: 1_000,
  listValues: 1_000,
  filters: 100,
  orderTerms: 100,
  /** PostgreSQL's own limit on a row's columns (MaxTupleAttributeNumber). */
  selectColumns: 1_664,
} as const

/**
 * Parses query-string pairs into a RowQuery for `dataset`. `optionKeys` are the
 * caller's own options (gzip, ...), skipped here. Throws UserError naming the problem.
 */
export function parseRowQuery(pairs: Iterable<[string, string]>, dataset: Dataset, optionKeys: readonly string[] = []): RowQuery {
  const known = new Set(dataset.columns.map((c) => c.name))
  const checkColumn = (name: string, where: string) => {
    if (!known.has(name)) throw badFilter(`${where}: "${shorten(name)}" is not a column of ${dataset.name}. Columns: ${[...known].join(', ')}`)
    return name
  }
  const query: RowQuery = { columns: [], filters: [], order: [], limit: null, offset: null }
  const seen = new Set<string>()

  for (const [key, value] of pairs) {
    // First, before any parsing: a check whose cost does not grow with the value.
    if (key.length > QUERY_LIMITS.valueChars || value.length > QUERY_LIMITS.valueChars) {
      throw badFilter(`the value of "${shorten(key)}" is longer than ${count(QUERY_LIMITS.valueChars)} characters`)
    }
    if (optionKeys.includes(key)) continue
    if ((RESERVED as readonly string[]).includes(key)) {
      if (seen.has(key)) throw badFilter(`"${key}" is given twice; give it once`)
      seen.add(key)
    }
    switch (key) {
      case 'select':
        query.columns = value.trim() === '*' || value.trim() === '' ? [] : splitList(value, 'select').map((name) => checkColumn(name, 'select'))
        if (query.columns.length > QUERY_LIMITS.selectColumns) {
          throw badFilter(`select names ${count(query.columns.length)} columns; a row holds at most ${count(QUERY_LIMITS.selectColumns)} in PostgreSQL`)
        }
        break
      case 'order':
        query.order = splitList(value, 'order').map((term) => parseOrderTerm(term, known, dataset.name))
        if (query.order.length > QUERY_LIMITS.orderTerms) throw badFilter(`order has ${count(query.order.length)} terms; at most ${QUERY_LIMITS.orderTerms} are allowed`)
        break
      case 'limit':
      case 'offset':
        query[key] = parseCount(key, value)
        break
      default:
        query.filters.push(parseFilter(checkColumn(key, 'filter'), value))
        if (query.filters.length > QUERY_LIMITS.filters) throw badFilter(`at most ${QUERY_LIMITS.filters} filters are allowed in one query`)
    }
  }
  return query
}

function parseFilter(column: string, text: string): Filter {
  let rest = text
  let negate = false
  if (rest.startsWith('not.')) {
    negate = true
    rest = rest.slice(4)
  }
  const dot = rest.indexOf('.')
  const op = dot < 0 ? rest : rest.slice(0, dot)
  const operand = dot < 0 ? null : rest.slice(dot + 1)
  const shown = `${column}=${shorten(text)}`
  if (operand === null) throw badFilter(`filter ${shown}: write it as ${column}=operator.value, e.g. ${column}=eq.42`)

  // Own properties only: "constructor" or "toString" are not operators.
  if (Object.hasOwn(COMPARISONS, op)) return { column, negate, op: op as keyof typeof COMPARISONS, value: operand }
  if (Object.hasOwn(PATTERNS, op)) {
    // PostgREST's `*` wildcard, so patterns survive URLs without escaping `%`.
    const value = op === 'like' || op === 'ilike' ? operand.replaceAll('*', '%') : operand
    // PostgreSQL only finds this when the query runs (EXPLAIN does not), so the export would fail later.
    if ((op === 'like' || op === 'ilike') && trailingBackslashes(value) % 2 === 1) {
      throw badFilter(`filter ${shown}: a ${op} pattern cannot end with a lone backslash (it escapes the next character; write \\\\ for a backslash)`)
    }
    if (op === 'match' || op === 'imatch') checkRegex(value, shown)
    return { column, negate, op: op as keyof typeof PATTERNS, value }
  }
  if (op === 'in') {
    if (!operand.startsWith('(') || !operand.endsWith(')')) throw badFilter(`filter ${shown}: write a list as in.(a,b,c)`)
    const inner = operand.slice(1, -1)
    const values = inner === '' ? [] : splitList(inner, `filter ${column}`)
    if (values.length > QUERY_LIMITS.listValues) throw badFilter(`filter ${column}: an in.() list holds at most ${count(QUERY_LIMITS.listValues)} values, this one ${count(values.length)}`)
    return { column, negate, op, values }
  }
  if (op === 'is') {
    const value = operand.toLowerCase()
    if (!(IS_VALUES as readonly string[]).includes(value)) throw badFilter(`filter ${shown}: is. takes one of ${IS_VALUES.join(', ')}`)
    return { column, negate, op, value: value as (typeof IS_VALUES)[number] }
  }
  throw badFilter(`filter ${shown}: unknown operator "${shorten(op)}". Use one of ${OPERATORS.join(', ')}, optionally after not.`)
}

/** Counted from the end, in a loop: a regex for this backtracked quadratically over a field of backslashes. */
function trailingBackslashes(text: string): number {
  let n = 0
  while (n < text.length && text.charCodeAt(text.length - 1 - n) === 0x5c) n++
  return n
}

/**
 * A match pattern may be at most QUERY_LIMITS.patternChars long and hold no back-reference
 * (\1 to \9, which also rules out octal escapes such as \101: write the character itself).
 * PostgreSQL matches back-references by backtracking, exponentially in the worst case, and
 * runs the pattern over the column's statistics while it plans: refused rather than bounded
 * by the timeout alone, since one such request holds a connection until then.
 */
function checkRegex(pattern: string, shown: string): void {
  if (pattern.length > QUERY_LIMITS.patternChars) {
    throw badFilter(`filter ${shown}: a match pattern may be at most ${count(QUERY_LIMITS.patternChars)} characters long, this one has ${count(pattern.length)}`)
  }
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] !== '\\') continue
    const next = pattern.charCodeAt(++i)
    if (next >= 0x31 && next <= 0x39) {
      throw badFilter(`filter ${shown}: match patterns cannot hold a back-reference (\\${pattern[i]}): they can take the database exponential time`)
    }
  }
}

const DIRECTIONS = new Set(['asc', 'desc', 'nullsfirst', 'nullslast'])

/** `a.desc.nullslast`; a column whose name holds dots is found whole, or may be double-quoted. */
function parseOrderTerm(term: string, known: Set<string>, datasetName: string): OrderTerm {
  let name: string
  let modifiers: string[]
  const quoted = splitQuotedName(term)
  if (quoted) {
    name = quoted.name
    modifiers = quoted.rest === '' ? [] : quoted.rest.replace(/^\./, '').split('.')
  } else {
    const parts = term.split('.')
    modifiers = []
    while (parts.length > 1 && !known.has(parts.join('.')) && DIRECTIONS.has(parts.at(-1)!)) modifiers.unshift(parts.pop()!)
    name = parts.join('.')
  }
  if (!known.has(name)) throw badFilter(`order: "${shorten(name)}" is not a column of ${datasetName}`)
  const result: OrderTerm = { column: name, direction: 'asc', nulls: null }
  for (const modifier of modifiers) {
    if (modifier === 'asc' || modifier === 'desc') result.direction = modifier
    else if (modifier === 'nullsfirst') result.nulls = 'first'
    else if (modifier === 'nullslast') result.nulls = 'last'
    else throw badFilter(`order: unknown direction "${shorten(modifier)}" for ${name}; use asc, desc, nullsfirst or nullslast`)
  }
  return result
}

/** `"a.b""c".desc` as { name: 'a.b"c', rest: '.desc' }, in one pass; null when the term does not start with a quote or never closes it. */
function splitQuotedName(term: string): { name: string; rest: string } | null {
  if (!term.startsWith('"')) return null
  let name = ''
  for (let i = 1; i < term.length; i++) {
    if (term[i] !== '"') { name += term[i]; continue }
    if (term[i + 1] === '"') { name += '"'; i++; continue }
    return { name, rest: term.slice(i + 1) }
  }
  return null
}

function parseCount(key: string, value: string): number {
  if (!/^\d{1,15}$/.test(value.trim())) throw badFilter(`${key} must be a whole number of 0 or more, got "${shorten(value)}"`)
  return Number(value.trim())
}

/** Splits `a,"b,c",d` on commas outside double quotes; `""` and `\"` inside quotes are a quote. */
export function splitList(text: string, where: string): string[] {
  const items: string[] = []
  let current = ''
  let inQuotes = false
  let wasQuoted = false
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!
    if (inQuotes) {
      if (ch === '\\' && i + 1 < text.length) current += text[++i]
      else if (ch === '"' && text[i + 1] === '"') { current += '"'; i++ }
      else if (ch === '"') inQuotes = false
      else current += ch
    } else if (ch === '"' && current.trim() === '') {
      inQuotes = true
      wasQuoted = true
      current = ''
    } else if (ch === ',') {
      items.push(wasQuoted ? current : current.trim())
      current = ''
      wasQuoted = false
    } else {
      current += ch
    }
  }
  if (inQuotes) throw badFilter(`${where}: a double quote is not closed in "${shorten(text)}"`)
  items.push(wasQuoted ? current : current.trim())
  return items
}

const badFilter = (message: string) => new UserError('BAD_FILTER', message, 400)

/** Request text quoted in a message: enough to recognise, never kilobytes of it. */
const shorten = (text: string) => (text.length > 80 ? `${text.slice(0, 77)}…` : text)
const count = (n: number) => n.toLocaleString('en-US')
