import { splitList, type Dataset } from '../datasets/index.ts'
import { UserError } from '../errors.ts'
import { normalizeEncoding, type DialectOverrides } from './dialect.ts'

export type ImportMode = 'insert' | 'upsert' | 'replace'

/** What an import task row stores besides its upload: the request's options, validated. */
export type ImportOptions = {
  mode: ImportMode
  /** Upsert conflict target; null: the primary key. */
  key: string[] | null
  onError: 'abort' | 'skip'
  dryRun: boolean
  dialect: DialectOverrides
  /** Target column of each CSV column, in order; null skips that CSV column. Null: match headers by name. */
  columns: (string | null)[] | null
}

export const IMPORT_OPTION_KEYS = [
  'mode', 'key', 'onError', 'dryRun', 'encoding', 'delimiter', 'quote', 'escape', 'header', 'headerLines',
  'skipLines', 'skipFooter', 'comment', 'columns',
] as const

/** The options that decide how the file is read (the rest decide how it is loaded). */
export const READING_OPTION_KEYS = ['encoding', 'delimiter', 'quote', 'escape', 'header', 'headerLines', 'skipLines', 'skipFooter', 'comment'] as const

// Far more than any title block or footer seen in real files, and small enough that detection's
// sample and the preview can still show what is skipped.
export const MAX_SKIP_LINES = 10_000

const DELIMITER_NAMES: Record<string, string> = { comma: ',', semicolon: ';', tab: '\t', pipe: '|', '\\t': '\t' }

/** Validates import options against the target table (see findTable); throws a 400 naming the problem. */
export function parseImportOptions(pairs: Iterable<[string, string]>, dataset: Dataset): ImportOptions {
  const values = new Map<string, string>()
  for (const [key, value] of pairs) {
    if (!(IMPORT_OPTION_KEYS as readonly string[]).includes(key)) throw bad(`unknown option "${key}". Options: ${IMPORT_OPTION_KEYS.join(', ')}`)
    if (values.has(key)) throw bad(`"${key}" is given twice; give it once`)
    values.set(key, value)
  }
  const known = new Set(dataset.columns.map((c) => c.name))
  const checkColumn = (name: string, where: string) => {
    if (!known.has(name)) throw bad(`${where}: "${name}" is not a column of ${dataset.name}`)
    return name
  }

  const mode = oneOf('mode', values.get('mode') ?? 'insert', ['insert', 'upsert', 'replace'] as const)
  const onError = oneOf('onError', values.get('onError') ?? 'abort', ['abort', 'skip'] as const)
  const dryRun = boolean('dryRun', values.get('dryRun') ?? 'false')

  let key: string[] | null = null
  const keyText = values.get('key')
  if (keyText !== undefined) {
    if (mode !== 'upsert') throw bad('key= only applies to mode=upsert')
    key = splitList(keyText, 'key').map((name) => checkColumn(name, 'key'))
    const isUnique = [dataset.primaryKey ?? [], ...dataset.uniqueKeys].some((k) => k.length === key!.length && k.every((c) => key!.includes(c)))
    if (!isUnique) throw bad(`key: (${key.join(', ')}) is not the primary key or a unique key of ${dataset.name}, so rows cannot be matched by it`)
  } else if (mode === 'upsert' && !dataset.primaryKey) {
    throw bad(`${dataset.name} has no primary key: give the unique columns to match rows by, e.g. key=email`)
  }

  const columnsText = values.get('columns')
  const columns = columnsText === undefined ? null : splitList(columnsText, 'columns').map((name) => (name === '' ? null : checkColumn(name, 'columns')))
  if (columns) {
    const mapped = columns.filter((c) => c !== null)
    const twice = mapped.find((c, i) => mapped.indexOf(c) !== i)
    if (twice) throw bad(`columns: "${twice}" is the target of two CSV columns`)
    if (mapped.length === 0) throw bad('columns: every CSV column is skipped; map at least one')
  }

  const dialect: DialectOverrides = {}
  const encoding = values.get('encoding')
  if (encoding) dialect.encoding = supportedEncoding(encoding)
  const delimiter = values.get('delimiter')
  if (delimiter !== undefined) dialect.delimiter = singleCharacter('delimiter', Object.hasOwn(DELIMITER_NAMES, delimiter) ? DELIMITER_NAMES[delimiter]! : delimiter)
  const quote = values.get('quote')
  if (quote !== undefined) dialect.quote = quote === '' || quote === 'none' ? null : singleCharacter('quote', quote)
  const escape = values.get('escape')
  if (escape !== undefined) dialect.escape = escape === '' || escape === 'none' ? null : singleCharacter('escape', escape)
  const header = values.get('header')
  if (header !== undefined) dialect.header = boolean('header', header)
  const headerLines = values.get('headerLines')
  if (headerLines !== undefined) {
    if (headerLines !== '1' && headerLines !== '2') throw bad(`headerLines must be 1 or 2, got "${headerLines}"`)
    if (dialect.header === false) throw bad('headerLines applies only when the file has a header; drop header=false or headerLines')
    dialect.headerLines = headerLines === '2' ? 2 : 1
  }
  const skipLines = values.get('skipLines')
  if (skipLines !== undefined) dialect.skipLines = count('skipLines', skipLines)
  const skipFooter = values.get('skipFooter')
  if (skipFooter !== undefined) dialect.skipFooter = skipFooter === 'auto' || skipFooter === 'none' ? skipFooter : count('skipFooter', skipFooter)
  const comment = values.get('comment')
  if (comment !== undefined) dialect.comment = comment === '' || comment === 'none' ? null : singleCharacter('comment', comment)
  if (dialect.delimiter !== undefined && dialect.delimiter === dialect.quote) throw bad('the delimiter and the quote must differ')
  if (dialect.comment != null && (dialect.comment === dialect.delimiter || dialect.comment === dialect.quote)) throw bad('the comment character must differ from the delimiter and the quote')

  return { mode, key, onError, dryRun, dialect, columns }
}

function oneOf<T extends string>(name: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) throw bad(`${name} must be one of ${allowed.join(', ')}, got "${value}"`)
  return value as T
}

function boolean(name: string, value: string): boolean {
  const v = value.toLowerCase()
  if (['true', '1', 'yes', 'on', ''].includes(v)) return true
  if (['false', '0', 'no', 'off'].includes(v)) return false
  throw bad(`${name} must be true or false, got "${value}"`)
}

// Checked now, not when the task runs: an unknown encoding would otherwise be stored and fail later.
function supportedEncoding(name: string): string {
  try {
    normalizeEncoding(name)
  } catch (err) {
    throw bad((err as Error).message)
  }
  return name
}

/** A count of lines: a whole number from 0 to MAX_SKIP_LINES, written in digits only. */
function count(name: string, value: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) > MAX_SKIP_LINES) {
    throw bad(`${name} must be a number of lines from 0 to ${MAX_SKIP_LINES}${name === 'skipFooter' ? ', auto or none' : ''}, got "${value}"`)
  }
  return Number(value)
}

function singleCharacter(name: string, value: string): string {
  if ([...value].length !== 1 || value === '\n' || value === '\r') throw bad(`${name} must be a single character (not a line break), got "${value}"`)
  return value
}

const bad = (message: string) => new UserError('BAD_OPTION', message, 400)
