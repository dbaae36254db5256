import { parseRowQuery, type Dataset, type RowQuery } from '../datasets/index.ts'
import { UserError } from '../errors.ts'

/** Options of an export request besides the PostgREST-style row query. */
export const EXPORT_OPTION_KEYS = ['gzip'] as const

/** What an export task row stores: the request's own pairs, parsed again when the task runs. */
export type ExportParams = { query: [string, string][]; gzip: boolean }

export function parseExportRequest(pairs: [string, string][], dataset: Dataset): { params: ExportParams; query: RowQuery } {
  const gzipValues = pairs.filter(([key]) => key === 'gzip').map(([, value]) => value.toLowerCase())
  if (gzipValues.length > 1) throw new UserError('BAD_OPTION', '"gzip" is given twice; give it once')
  const gzipText = gzipValues[0] ?? 'false'
  if (!['true', 'false', '1', '0', 'on', ''].includes(gzipText)) throw new UserError('BAD_OPTION', `gzip must be true or false, got "${gzipText}"`)
  const query = parseRowQuery(pairs, dataset, EXPORT_OPTION_KEYS)
  const rowPairs = pairs.filter(([key]) => !(EXPORT_OPTION_KEYS as readonly string[]).includes(key))
  return { params: { query: rowPairs, gzip: ['true', '1', 'on', ''].includes(gzipText) }, query }
}
