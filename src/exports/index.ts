import { asRole, type Sql } from '../db/client.ts'
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
export async function requestExport(
  sql: Sql,
  options: { schema: string; maxAttempts: number },
  requester: { ownerId: string; dbRole: string | null; maxActiveTasks?: number | null },
  datasetName: string,
  pairs: [string, string][],
  /** The client's: once it has gone, planning stops and nothing is queued. */
  signal?: AbortSignal,
): Promise<TaskRow> {
  // Checked as the requester's role: a dataset it may not read does not exist for it.
  const { dataset, params, estimate } = await asRole(sql, requester.dbRole, async (tx) => {
    const dataset = await findDataset(tx, options.schema, datasetName)
    if (!dataset) throw new UserError('DATASET_NOT_FOUND', `There is no dataset named "${datasetName}".`, 404)
    const { params, query } = parseExportRequest(pairs, dataset)
    return { dataset, params, estimate: await planSelect(tx, await buildSelectSql(tx, dataset, query, { excelSafe: params.excelSafe }), signal) }
  })
  signal?.throwIfAborted()
  return enqueueTask(sql, {
    kind: 'export', dataset: dataset.name, params, progressTotal: estimate, maxAttempts: options.maxAttempts,
    ownerId: requester.ownerId, runAsRole: requester.dbRole, maxActiveTasks: requester.maxActiveTasks,
  })
}
