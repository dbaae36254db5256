import { asRole, type Sql } from '../db/client.ts'
import { findDataset, type Dataset } from '../datasets/index.ts'
import { UserError } from '../errors.ts'
import type { Storage } from '../storage/index.ts'
import { enqueueTask, type TaskRow } from '../tasks/queries.ts'
import { parseImportOptions, type ImportOptions } from './options.ts'
import { refuseFieldCountBomb } from './preview.ts'
import type { DialectOverrides } from './dialect.ts'
import type { ImportParams } from './run-import.ts'
import { storeUpload, type StoredUpload, type UploadRequest } from './upload.ts'

export { detectDialect, SAMPLE_BYTES } from './dialect.ts'
export type { Dialect, DialectOverrides, LineEnding } from './dialect.ts'
export { readRecords, newLineAccount } from './read-records.ts'
export type { CsvReadError, CsvReadErrorCode, CsvRecord, LineAccount, ReadOptions } from './read-records.ts'
export { parseImportOptions, IMPORT_OPTION_KEYS, READING_OPTION_KEYS, type ImportOptions } from './options.ts'
export type { ImportSummary, ImportParams } from './run-import.ts'
export { previewUpload, type Preview, type PreviewLine } from './preview.ts'
export { proposeTargets } from './mapping.ts'

export type UploadRow = { id: string; dataset: string; storageKey: string; fileName: string | null; size: number; sha256: string; ownerId: string | null; createdAt: Date }

/** Who asks: the upload and task are theirs, and the checks run as their PostgreSQL role. */
export type Requester = { ownerId: string; dbRole: string | null }

const UPLOAD_COLUMNS = (sql: Sql) => sql`
  id, dataset, storage_key as "storageKey", file_name as "fileName", size, sha256, owner_id as "ownerId", created_at as "createdAt"`

/** The table to import into, as the requester's role sees it. */
export async function findTable(sql: Sql, schema: string, name: string, requester: Requester): Promise<Dataset> {
  const dataset = await asRole(sql, requester.dbRole, (tx) => findDataset(tx, schema, name))
  if (!dataset) throw new UserError('DATASET_NOT_FOUND', `There is no dataset named "${name}".`, 404)
  if (dataset.kind !== 'table') throw new UserError('NOT_A_TABLE', `${name} is a ${dataset.kind}; only tables can be imported into.`, 400)
  if (!dataset.canImport) throw new UserError('FORBIDDEN', `You may read ${name} but not import into it (no INSERT privilege).`, 403)
  return dataset
}

/** Stores the request's file and records it; the options were checked before a byte was read. */
export async function receiveUpload(sql: Sql, storage: Storage, dataset: Dataset, request: UploadRequest, maxBytes: number, requester: Requester, overrides: DialectOverrides = {}): Promise<UploadRow & { fields: Record<string, string> }> {
  const stored: StoredUpload = await storeUpload(request, storage, maxBytes)
  try {
    await refuseFieldCountBomb(storage.pathOf(stored.key), overrides)
  } catch (err) {
    await storage.remove(stored.key)
    throw err
  }
  const [row] = await sql<UploadRow[]>`
    insert into sluice.uploads (dataset, storage_key, file_name, size, sha256, owner_id)
    values (${dataset.name}, ${stored.key}, ${stored.fileName}, ${stored.size}, ${stored.sha256}, ${requester.ownerId})
    returning ${UPLOAD_COLUMNS(sql)}`
  return { ...row!, fields: stored.fields }
}

export async function getUpload(sql: Sql, id: string): Promise<UploadRow | null> {
  if (!/^[0-9a-f-]{36}$/i.test(id)) return null
  const [row] = await sql<UploadRow[]>`select ${UPLOAD_COLUMNS(sql)} from sluice.uploads where id = ${id}`
  return row ?? null
}

export async function enqueueImport(sql: Sql, upload: UploadRow, options: ImportOptions, maxAttempts: number, requester: Requester): Promise<TaskRow> {
  const params: ImportParams = { uploadId: upload.id, uploadKey: upload.storageKey, fileName: upload.fileName, size: upload.size, options }
  return enqueueTask(sql, {
    kind: 'import', dataset: upload.dataset, params, progressTotal: upload.size, maxAttempts,
    ownerId: requester.ownerId, runAsRole: requester.dbRole,
  })
}

/** The API's one-step import: options checked, file stored, task queued. */
export async function requestImport(sql: Sql, storage: Storage, settings: { schema: string; maxUploadBytes: number; maxAttempts: number }, requester: Requester, datasetName: string, pairs: [string, string][], request: UploadRequest): Promise<TaskRow> {
  const dataset = await findTable(sql, settings.schema, datasetName, requester)
  const options = parseImportOptions(pairs, dataset)
  const upload = await receiveUpload(sql, storage, dataset, request, settings.maxUploadBytes, requester, options.dialect)
  return enqueueImport(sql, upload, options, settings.maxAttempts, requester)
}
