import { parseRowQuery, type Dataset, type RowQuery } from '../datasets/index.ts'
import { UserError } from '../errors.ts'

/** Options of an export request besides the PostgREST-style row query. */
export const EXPORT_OPTION_KEYS = ['gzip', 'excelSafe'] as const

/**
 * What an export task row stores: the request's own pairs, parsed again when the task runs.
 * `excelSafe` (absent in tasks stored before it existed): cells a spreadsheet would run as
 * formulas get a leading apostrophe.
 */
export type ExportParams = { query: [string, string][]; gzip: boolean; excelSafe?: boolean }

export function parseExportRequest(pairs: [string, string][], dataset: Dataset): { params: ExportParams; query: RowQuery } {
  const query = parseRowQuery(pairs, dataset, EXPORT_OPTION_KEYS)
  const rowPairs = pairs.filter(([key]) => !(EXPORT_OPTION_KEYS as readonly string[]).includes(key))
  return { params: { query: rowPairs, gzip: booleanOption(pairs, 'gzip'), excelSafe: booleanOption(pairs, 'excelSafe') }, query }
}

function booleanOption(pairs: [string, string][], name: (typeof EXPORT_OPTION_KEYS)[number]): boolean {
  const values = pairs.filter(([key]) => key === name).map(([, value]) => value.toLowerCase())
  if (values.length > 1) throw new UserError('BAD_OPTION', `"${name}" is given twice; give it once`)
  const text = values[0] ?? 'false'
  if (!['true', 'false', '1', '0', 'on', ''].includes(text)) throw new UserError('BAD_OPTION', `${name} must be true or false, got "${text}"`)
  return ['true', '1', 'on', ''].includes(text)
}
