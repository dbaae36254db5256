import { UserError } from '../errors.ts'
import type { ImportOptions } from './options.ts'
import type { Target, TargetColumn } from './target.ts'

/** Which table column each CSV column feeds; null skips that CSV column. */
export type Mapping = (TargetColumn | null)[] & {
  /**
   * CSV columns left out because nothing names them (an empty header cell over no table
   * column): a value in one fails its row, since it was never mapped on purpose.
   */
  unnamed?: number[]
}

/**
 * Matches the file's columns to the table's: by `columns=` when given, else by header
 * (ignoring case and surrounding spaces), else by position. Every problem is named at once.
 */
export function mapColumns(target: Target, options: ImportOptions, firstRecord: (string | null)[], hasHeader: boolean, renamed: number[] = [], filled: boolean[] = []): Mapping {
  const byName = new Map(target.columns.map((c) => [c.name, c]))
  let mapping: Mapping
  if (options.columns) {
    if (options.columns.length !== firstRecord.length) {
      throw unmapped(`columns= names ${options.columns.length} column(s) but the file has ${firstRecord.length}. Give one entry per CSV column, empty to skip it.`)
    }
    mapping = options.columns.map((name) => (name === null ? null : byName.get(name)!))
  } else if (hasHeader) {
    const missing: string[] = []
    const unnamed: number[] = []
    const writable = target.columns.filter((c) => !c.generated)
    const named = firstRecord.map((header, i) => (renamed.includes(i) ? null : (header ?? '').trim()))
    const byHeader = (wanted: string) => byName.get(wanted) ?? target.columns.find((c) => c.name.toLowerCase() === wanted.toLowerCase())
    const taken = new Set(named.flatMap((n) => (n ? [byHeader(n)?.name] : [])))
    mapping = firstRecord.map((header, i) => {
      const wanted = named[i]
      if (wanted === null || wanted === '') {
        // An empty, repeated or over-long name: its clear name (column_4), else, when the sample has
        // values in it, the table's column at that position (an empty column is not worth a NULL over a default).
        const clear = byHeader(`column_${i + 1}`)
        const atPosition = filled[i] && writable[i] && !taken.has(writable[i]!.name) ? writable[i] : undefined
        const column = clear ?? atPosition
        if (column) taken.add(column.name)
        else unnamed.push(i)
        return column ?? null
      }
      const column = byHeader(wanted!)
      if (!column) missing.push(`"${header ?? ''}"`)
      return column ?? null
    })
    if (missing.length > 0) {
      throw unmapped(`The file's column(s) ${missing.join(', ')} match no column of ${target.name} (${target.columns.map((c) => c.name).join(', ')}). Rename them in the file, or map every CSV column with columns= (empty to skip one).`)
    }
    const names = mapping.flatMap((c) => (c ? [c.name] : []))
    const twice = names.find((n, i) => names.indexOf(n) !== i)
    if (twice) throw unmapped(`Two columns of the file match "${twice}". Rename one, or map them with columns=.`)
    mapping.unnamed = unnamed
  } else {
    const writable = target.columns.filter((c) => !c.generated)
    if (firstRecord.length > writable.length) throw unmapped(`The file has ${firstRecord.length} columns but ${target.name} takes ${writable.length}. Map them with columns=.`)
    mapping = firstRecord.map((_, i) => writable[i]!)
  }

  if (mapping.every((c) => c === null)) throw unmapped(`No column of the file is mapped to a column of ${target.name}: map at least one with columns=.`)
  const mapped = new Set(mapping.filter((c) => c !== null).map((c) => c.name))
  const generated = mapping.filter((c) => c?.generated).map((c) => `"${c!.name}"`)
  if (generated.length > 0) throw unmapped(`Column(s) ${generated.join(', ')} are computed by the database and cannot be imported; skip them with columns=.`)
  const required = target.columns.filter((c) => c.notNull && !c.hasDefault && !c.generated && !mapped.has(c.name)).map((c) => `"${c.name}"`)
  if (required.length > 0) throw unmapped(`Column(s) ${required.join(', ')} of ${target.name} are required (NOT NULL, no default) but the file has no column for them.`)
  const key = options.mode === 'upsert' ? (options.key ?? target.primaryKey ?? []) : []
  const keyMissing = key.filter((k) => !mapped.has(k))
  if (keyMissing.length > 0) throw unmapped(`mode=upsert matches rows by (${key.join(', ')}), but the file has no column for ${keyMissing.join(', ')}.`)
  return mapping
}

const unmapped = (message: string) => new UserError('BAD_MAPPING', message, 422)

/** The preview's first guess: each header matched to a column as mapColumns would, else skipped. */
export function proposeTargets(columnNames: string[], names: string[], hasHeader: boolean, renamed: number[] = []): (string | null)[] {
  if (!hasHeader) return names.map((_, i) => columnNames[i] ?? null)
  const find = (wanted: string) => columnNames.find((n) => n === wanted) ?? columnNames.find((n) => n.toLowerCase() === wanted.toLowerCase()) ?? null
  const proposed = names.map((header, i) => (renamed.includes(i) ? null : find(header.trim())))
  for (const i of renamed) proposed[i] = find(`column_${i + 1}`) ?? (columnNames[i] && !proposed.includes(columnNames[i]!) ? columnNames[i]! : null)
  return proposed
}
