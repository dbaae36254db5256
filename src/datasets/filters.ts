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

/**
 * Parses query-string pairs into a RowQuery for `dataset`. `optionKeys` are the
 * caller's own options (gzip, ...), skipped here. Throws UserError naming the problem.
 */
export function parseRowQuery(pairs: Iterable<[string, string]>, dataset: Dataset, optionKeys: readonly string[] = []): RowQuery {
  const known = new Set(dataset.columns.map((c) => c.name))
  const checkColumn = (name: string, where: string) => {
    if (!known.has(name)) throw badFilter(`${where}: "${name}" is not a column of ${dataset.name}. Columns: ${[...known].join(', ')}`)
    return name
  }
  const query: RowQuery = { columns: [], filters: [], order: [], limit: null, offset: null }
  const seen = new Set<string>()

  for (const [key, value] of pairs) {
    if (optionKeys.includes(key)) continue
    if ((RESERVED as readonly string[]).includes(key)) {
      if (seen.has(key)) throw badFilter(`"${key}" is given twice; give it once`)
      seen.add(key)
    }
    switch (key) {
      case 'select':
        query.columns = value.trim() === '*' || value.trim() === '' ? [] : splitList(value, 'select').map((name) => checkColumn(name, 'select'))
        break
      case 'order':
        query.order = splitList(value, 'order').map((term) => parseOrderTerm(term, known, dataset.name))
        break
      case 'limit':
      case 'offset':
        query[key] = parseCount(key, value)
        break
      default:
        query.filters.push(parseFilter(checkColumn(key, 'filter'), value))
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
  if (operand === null) throw badFilter(`filter ${column}=${text}: write it as ${column}=operator.value, e.g. ${column}=eq.42`)

  if (op in COMPARISONS) return { column, negate, op: op as keyof typeof COMPARISONS, value: operand }
  if (op in PATTERNS) {
    // PostgREST's `*` wildcard, so patterns survive URLs without escaping `%`.
    const value = op === 'like' || op === 'ilike' ? operand.replaceAll('*', '%') : operand
    // PostgreSQL only finds this when the query runs (EXPLAIN does not), so the export would fail later.
    if ((op === 'like' || op === 'ilike') && (/\\+$/.exec(value)?.[0].length ?? 0) % 2 === 1) {
      throw badFilter(`filter ${column}=${text}: a ${op} pattern cannot end with a lone backslash (it escapes the next character; write \\\\ for a backslash)`)
    }
    return { column, negate, op: op as keyof typeof PATTERNS, value }
  }
  if (op === 'in') {
    if (!operand.startsWith('(') || !operand.endsWith(')')) throw badFilter(`filter ${column}=${text}: write a list as in.(a,b,c)`)
    const inner = operand.slice(1, -1)
    return { column, negate, op, values: inner === '' ? [] : splitList(inner, `filter ${column}`) }
  }
  if (op === 'is') {
    const value = operand.toLowerCase()
    if (!(IS_VALUES as readonly string[]).includes(value)) throw badFilter(`filter ${column}=${text}: is. takes one of ${IS_VALUES.join(', ')}`)
    return { column, negate, op, value: value as (typeof IS_VALUES)[number] }
  }
  throw badFilter(`filter ${column}=${text}: unknown operator "${op}". Use one of ${OPERATORS.join(', ')}, optionally after not.`)
}

const DIRECTIONS = new Set(['asc', 'desc', 'nullsfirst', 'nullslast'])

/** `a.desc.nullslast`; a column whose name holds dots is found whole, or may be double-quoted. */
function parseOrderTerm(term: string, known: Set<string>, datasetName: string): OrderTerm {
  let name: string
  let modifiers: string[]
  const quoted = /^"((?:[^"]|"")*)"(.*)$/.exec(term)
  if (quoted) {
    name = quoted[1]!.replaceAll('""', '"')
    modifiers = quoted[2] === '' ? [] : quoted[2]!.replace(/^\./, '').split('.')
  } else {
    const parts = term.split('.')
    modifiers = []
    while (parts.length > 1 && !known.has(parts.join('.')) && DIRECTIONS.has(parts.at(-1)!)) modifiers.unshift(parts.pop()!)
    name = parts.join('.')
  }
  if (!known.has(name)) throw badFilter(`order: "${name}" is not a column of ${datasetName}`)
  const result: OrderTerm = { column: name, direction: 'asc', nulls: null }
  for (const modifier of modifiers) {
    if (modifier === 'asc' || modifier === 'desc') result.direction = modifier
    else if (modifier === 'nullsfirst') result.nulls = 'first'
    else if (modifier === 'nullslast') result.nulls = 'last'
    else throw badFilter(`order: unknown direction "${modifier}" for ${name}; use asc, desc, nullsfirst or nullslast`)
  }
  return result
}

function parseCount(key: string, value: string): number {
  if (!/^\d{1,15}$/.test(value.trim())) throw badFilter(`${key} must be a whole number of 0 or more, got "${value}"`)
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
  if (inQuotes) throw badFilter(`${where}: a double quote is not closed in "${text}"`)
  items.push(wasQuoted ? current : current.trim())
  return items
}

const badFilter = (message: string) => new UserError('BAD_FILTER', message, 400)
