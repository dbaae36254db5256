import type { Sql } from '../db/client.ts'
import { buildSelectSql, findDataset, planSelect } from '../datasets/index.ts'
import { UserError } from '../errors.ts'
import { enqueueTask, type TaskRow } from '../tasks/queries.ts'
import { parseExportRequest } from './params.ts'

export { writeExport, exportFileName } from './run-export.ts'
export type { ExportParams } from './params.ts'

/**
 * Validates an export request completely (names, operators, and values against
 * their column types, by planning the query) and queues it. Anything wrong is a
 * 400 now, not a failed task later.
 */
export async function requestExport(sql: Sql, options: { schema: string; maxAttempts: number }, datasetName: string, pairs: [string, string][]): Promise<TaskRow> {
  const dataset = await findDataset(sql, options.schema, datasetName)
  if (!dataset) throw new UserError('DATASET_NOT_FOUND', `There is no dataset named "${datasetName}".`, 404)
  const { params, query } = parseExportRequest(pairs, dataset)
  const estimate = await planSelect(sql, await buildSelectSql(sql, dataset, query))
  return enqueueTask(sql, { kind: 'export', dataset: dataset.name, params, progressTotal: estimate, maxAttempts: options.maxAttempts })
}
