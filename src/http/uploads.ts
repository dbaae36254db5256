import { Hono, type Context } from 'hono'
import { mayAccess, requesterOf } from '../auth/index.ts'
import { UserError, isUserError } from '../errors.ts'
import {
  enqueueImport, findTable, getUpload, IMPORT_OPTION_KEYS, parseImportOptions, previewUpload, proposeTargets, receiveUpload,
  READING_OPTION_KEYS, type Preview, type UploadRow,
} from '../imports/index.ts'
import type { Dataset } from '../datasets/index.ts'
import type { Storage } from '../storage/index.ts'
import type { AppEnv } from './app.tsx'
import { uploadRequestOf } from './incoming.ts'
import { presentTask } from './present.ts'

/**
 * Uploads in two steps, for a script that wants to see how its file will be read before it
 * loads it (the page's preview, as JSON): upload, preview with any reading options, import.
 */
export function uploadApiRoutes() {
  const api = new Hono<AppEnv>()

  api.post('/datasets/:name/uploads', async (c) => {
    const { sql, config, storage } = c.get('deps')
    const requester = requesterOf(c.get('principal'), c.get('deps').config)
    const dataset = await findTable(sql, config.datasetSchema, c.req.param('name'), requester)
    const upload = await receiveUpload(sql, storage, dataset, uploadRequestOf(c), config.maxUploadBytes, requester)
    const base = new URL(c.req.url).origin
    c.header('Location', `/api/uploads/${upload.id}`)
    return c.json({ ...presentUpload(upload), preview: `${base}/api/uploads/${upload.id}`, imports: `${base}/api/uploads/${upload.id}/imports` }, 201)
  })

  api.get('/uploads/:id', async (c) => {
    const { sql, config, storage } = c.get('deps')
    const upload = await getVisibleUpload(c, c.req.param('id'))
    const dataset = await findTable(sql, config.datasetSchema, upload.dataset, requesterOf(c.get('principal'), c.get('deps').config))
    const pairs = [...new URL(c.req.url).searchParams.entries()]
    const other = pairs.find(([key]) => !(READING_OPTION_KEYS as readonly string[]).includes(key))
    if (other) {
      const why = (IMPORT_OPTION_KEYS as readonly string[]).includes(other[0]) ? 'is an import option: give it when you start the import' : 'is not an option'
      throw new UserError('BAD_OPTION', `"${other[0]}" ${why}. A preview takes: ${READING_OPTION_KEYS.join(', ')}`, 400)
    }
    const preview = await readPreview(storage, dataset, upload, pairs)
    return c.json(presentPreview(upload, dataset, preview))
  })

  api.post('/uploads/:id/imports', async (c) => {
    const { sql, config, linkSigner } = c.get('deps')
    const upload = await getVisibleUpload(c, c.req.param('id'))
    const requester = requesterOf(c.get('principal'), c.get('deps').config)
    const dataset = await findTable(sql, config.datasetSchema, upload.dataset, requester)
    await requireStored(c.get('deps').storage, upload)
    const options = parseImportOptions(new URL(c.req.url).searchParams.entries(), dataset)
    const task = await enqueueImport(sql, upload, options, config.taskMaxAttempts, requester)
    c.header('Location', `/api/tasks/${task.id}`)
    return c.json(presentTask(task, new URL(c.req.url).origin, linkSigner), 202)
  })

  return api
}

/** The upload, if this principal may see it; someone else's is "not found", not "forbidden". */
export async function getVisibleUpload(c: Context<AppEnv>, id: string): Promise<UploadRow> {
  const upload = await getUpload(c.get('deps').sql, id)
  if (!upload || !mayAccess(c.get('principal'), upload.ownerId)) throw new UserError('UPLOAD_NOT_FOUND', 'There is no upload with that id.', 404)
  return upload
}

async function requireStored(storage: Storage, upload: UploadRow): Promise<void> {
  if ((await storage.size(upload.storageKey)) === null) {
    throw new UserError('UPLOAD_EXPIRED', 'This upload has expired and its file was deleted. Upload it again.', 410)
  }
}

/** The file as the import would read it with these reading options (checked by the import's own parser). */
export async function readPreview(storage: Storage, dataset: Dataset, upload: UploadRow, pairs: [string, string][]): Promise<Preview> {
  await requireStored(storage, upload)
  const overrides = parseImportOptions(pairs, dataset).dialect
  try {
    return await previewUpload(storage.pathOf(upload.storageKey), overrides)
  } catch (err) {
    if (isUserError(err)) throw err
    throw new UserError('BAD_DIALECT', `The file cannot be read that way: ${(err as Error).message}`, 422)
  }
}

function presentUpload(upload: UploadRow) {
  const { id, dataset, fileName, size, sha256, createdAt } = upload
  return { id, dataset, fileName, size, sha256, createdAt }
}

/** The preview as JSON: each guess with its reason, what each line is used as, the columns and their targets. */
function presentPreview(upload: UploadRow, dataset: Dataset, preview: Preview) {
  const { dialect } = preview
  const targets = proposeTargets(dataset.columns.map((c) => c.name), preview.columnNames, dialect.header, dialect.renamed)
  return {
    upload: presentUpload(upload),
    dialect: {
      encoding: dialect.encoding, encodingAlternatives: dialect.encodingAlternatives, bom: dialect.bom, delimiter: dialect.delimiter, quote: dialect.quote, escape: dialect.escape,
      lineEnding: dialect.lineEnding, sepLine: dialect.sepLine, skipLines: dialect.skipLines, header: dialect.header,
      headerLines: dialect.headerLines, footerLines: dialect.footerLines, comment: dialect.comment,
    },
    reasons: dialect.reasons,
    columns: preview.columnNames.map((name, index) => ({
      index, name, renamed: dialect.renamed.includes(index), hasValues: dialect.filled[index] ?? false, target: targets[index] ?? null,
    })),
    head: preview.head,
    tail: preview.tail,
    rows: preview.rows,
    error: preview.error,
  }
}
