import { asRole, type Sql } from '../db/client.ts'
import { findDataset, type Dataset } from '../datasets/index.ts'
import { UserError } from '../errors.ts'
import type { Storage } from '../storage/index.ts'
import { enqueueTask, isUuid, type TaskRow } from '../tasks/queries.ts'
import { refuseOverQuota, RESERVATION_RENEW_MS, releaseReservation, renewReservation, reserveStorage, uploadOverQuota, type Reservation } from '../tasks/quotas.ts'
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

/** Who asks: the upload and task are theirs, the checks run as their PostgreSQL role, within their quotas (null: none). */
export type Requester = { ownerId: string; dbRole: string | null; maxActiveTasks: number | null; maxStoredBytes: number | null }

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

/**
 * Stores the request's file and records it; the options were checked before a byte was read.
 * Under a storage quota the upload first reserves what it may write (at most `maxBytes`), so
 * concurrent uploads of one token cannot together overshoot it; the reservation becomes the
 * upload's row in one transaction.
 */
export async function receiveUpload(sql: Sql, storage: Storage, dataset: Dataset, request: UploadRequest, maxBytes: number, requester: Requester, overrides: DialectOverrides = {}): Promise<UploadRow & { fields: Record<string, string> }> {
  const quota = requester.maxStoredBytes
  const reservation: Reservation | null = quota === null ? null : await reserveStorage(sql, requester.ownerId, quota, maxBytes)
  const renewal = reservation && setInterval(() => void renewReservation(sql, reservation.id).catch(() => {}), RESERVATION_RENEW_MS)
  try {
    const stored = await storeWithin(request, storage, maxBytes, reservation, quota)
    try {
      await refuseFieldCountBomb(storage.pathOf(stored.key), overrides)
    } catch (err) {
      await storage.remove(stored.key)
      throw err
    }
    const row = await sql.begin(async (tx) => {
      const [inserted] = await tx<UploadRow[]>`
        insert into sluice.uploads (dataset, storage_key, file_name, size, sha256, owner_id)
        values (${dataset.name}, ${stored.key}, ${stored.fileName}, ${stored.size}, ${stored.sha256}, ${requester.ownerId})
        returning ${UPLOAD_COLUMNS(tx as unknown as Sql)}`
      if (reservation) await releaseReservation(tx as unknown as Sql, reservation.id)
      return inserted!
    })
    return { ...row, fields: stored.fields }
  } catch (err) {
    if (reservation) await releaseReservation(sql, reservation.id).catch(() => {}) // else it lapses by itself
    throw err
  } finally {
    if (renewal) clearInterval(renewal)
  }
}

/** The file, stopped at the smaller of the upload limit and what the reservation left of the quota. */
async function storeWithin(request: UploadRequest, storage: Storage, maxBytes: number, reservation: Reservation | null, quota: number | null): Promise<StoredUpload> {
  if (!reservation || reservation.bytes >= maxBytes) return storeUpload(request, storage, maxBytes)
  try {
    return await storeUpload(request, storage, reservation.bytes)
  } catch (err) {
    if ((err as { code?: string }).code === 'UPLOAD_TOO_LARGE') throw uploadOverQuota(quota!, reservation.bytes)
    throw err
  }
}

export async function getUpload(sql: Sql, id: string): Promise<UploadRow | null> {
  if (!isUuid(id)) return null
  const [row] = await sql<UploadRow[]>`select ${UPLOAD_COLUMNS(sql)} from sluice.uploads where id = ${id}`
  return row ?? null
}

export async function enqueueImport(sql: Sql, upload: UploadRow, options: ImportOptions, maxAttempts: number, requester: Requester): Promise<TaskRow> {
  const params: ImportParams = { uploadId: upload.id, uploadKey: upload.storageKey, fileName: upload.fileName, size: upload.size, options }
  return enqueueTask(sql, {
    kind: 'import', dataset: upload.dataset, params, progressTotal: upload.size, maxAttempts,
    ownerId: requester.ownerId, runAsRole: requester.dbRole, maxActiveTasks: requester.maxActiveTasks,
  })
}

/** The API's one-step import: options checked, file stored, task queued. */
export async function requestImport(sql: Sql, storage: Storage, settings: { schema: string; maxUploadBytes: number; maxAttempts: number }, requester: Requester, datasetName: string, pairs: [string, string][], request: UploadRequest): Promise<TaskRow> {
  const dataset = await findTable(sql, settings.schema, datasetName, requester)
  const options = parseImportOptions(pairs, dataset)
  await refuseOverQuota(sql, requester) // before the file streams, not after it is stored
  const upload = await receiveUpload(sql, storage, dataset, request, settings.maxUploadBytes, requester, options.dialect)
  return enqueueImport(sql, upload, options, settings.maxAttempts, requester)
}
