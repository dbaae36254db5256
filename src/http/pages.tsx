import { readFileSync } from 'node:fs'
import { Hono, type Context } from 'hono'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import { isAdmin, requesterOf } from '../auth/index.ts'
import { asRole } from '../db/client.ts'
import { findDataset, listDatasets } from '../datasets/index.ts'
import { isUserError, UserError } from '../errors.ts'
import { requestExport } from '../exports/index.ts'
import { enqueueImport, findTable, parseImportOptions, proposeTargets, READING_OPTION_KEYS, receiveUpload, type UploadRow } from '../imports/index.ts'
import { getVisibleUpload, readPreview } from './uploads.ts'
import type { Storage } from '../storage/index.ts'
import type { Dataset } from '../datasets/index.ts'
import { UploadPreviewPage, type ReadingChoice } from '../../views/upload-preview.tsx'
import { listRecentTasks, requestCancel } from '../tasks/queries.ts'
import { refuseOverQuota } from '../tasks/quotas.ts'
import { DatasetPage } from '../../views/dataset.tsx'
import { HomePage } from '../../views/home.tsx'
import { TaskPage, TaskStatus } from '../../views/task.tsx'
import { retryDeadTask } from './api.ts'
import type { AppEnv } from './app.tsx'
import { clientGoneSignal, uploadRequestOf } from './incoming.ts'
import { downloadPath, isFinished, signedLink } from './present.ts'
import { render } from './render.tsx'
import { getVisibleTask } from './task-files.ts'

const CSS = readFileSync(new URL('../../views/static/sluice.css', import.meta.url))
const UPLOAD_PROGRESS = readFileSync(new URL('../../views/static/upload-progress.js', import.meta.url))

/** htmx stops polling an element whose response has this status. */
const HTMX_STOP_POLLING = 286 as ContentfulStatusCode

/** Server-rendered pages: plain HTML forms that htmx improves when JavaScript is on. */
export function pageRoutes() {
  const pages = new Hono<AppEnv>()

  pages.get('/static/sluice.css', (c) => c.body(CSS, 200, { 'Content-Type': 'text/css; charset=utf-8', 'Cache-Control': 'public, max-age=3600' }))

  pages.get('/static/upload-progress.js', (c) => c.body(UPLOAD_PROGRESS, 200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'public, max-age=3600' }))

  pages.get('/', async (c) => {
    const { sql, config } = c.get('deps')
    const principal = c.get('principal')
    const [datasets, tasks] = await Promise.all([
      asRole(sql, principal.dbRole, (tx) => listDatasets(tx, config.datasetSchema)),
      listRecentTasks(sql, isAdmin(principal) ? null : principal.tokenId, 20),
    ])
    return render(c, <HomePage datasets={datasets} tasks={tasks} schema={config.datasetSchema} />)
  })

  pages.get('/datasets/:name', async (c) => {
    const dataset = await findVisibleDataset(c, c.req.param('name'))
    if (!dataset) throw new UserError('DATASET_NOT_FOUND', `There is no dataset named "${c.req.param('name')}".`, 404)
    return render(c, <DatasetPage dataset={dataset} />)
  })

  pages.post('/datasets/:name/exports', async (c) => {
    const { sql, config } = c.get('deps')
    const name = c.req.param('name')
    const form = await c.req.parseBody({ all: true })
    try {
      const settings = { schema: config.datasetSchema, maxAttempts: config.taskMaxAttempts }
      const requester = requesterOf(c.get('principal'), config)
      await refuseOverQuota(sql, requester)
      const task = await requestExport(sql, settings, requester, name, formToQuery(form), clientGoneSignal(c))
      return c.redirect(`/tasks/${task.id}`, 303)
    } catch (err) {
      const dataset = isUserError(err) && err.code !== 'DATASET_NOT_FOUND' ? await findVisibleDataset(c, name) : null
      if (!dataset || !isUserError(err)) throw err
      // A quota's refusal keeps its status (429, 507): the form was right, the time was not.
      return render(c, <DatasetPage dataset={dataset} error={err.message} />, err.status === 429 || err.status === 507 ? err.status : 400)
    }
  })

  pages.post('/datasets/:name/uploads', async (c) => {
    const { sql, config, storage } = c.get('deps')
    const requester = requesterOf(c.get('principal'), c.get('deps').config)
    const dataset = await findTable(sql, config.datasetSchema, c.req.param('name'), requester)
    const upload = await receiveUpload(sql, storage, dataset, uploadRequestOf(c), config.maxUploadBytes, requester)
    const target = `/uploads/${upload.id}`
    // htmx posts the form itself (to show upload progress): tell it where to go.
    if (c.req.header('HX-Request') === 'true') return c.body(null, 200, { 'HX-Redirect': target })
    return c.redirect(target, 303)
  })

  pages.get('/uploads/:id', async (c) => {
    const { sql, config, storage } = c.get('deps')
    const upload = await getVisibleUpload(c, c.req.param('id'))
    const dataset = await findTable(sql, config.datasetSchema, upload.dataset, requesterOf(c.get('principal'), c.get('deps').config))
    const choice = pickReading(c.req.query())
    return render(c, await renderPreview(storage, dataset, upload, choice))
  })

  pages.post('/uploads/:id/imports', async (c) => {
    const { sql, config, storage } = c.get('deps')
    const upload = await getVisibleUpload(c, c.req.param('id'))
    const requester = requesterOf(c.get('principal'), c.get('deps').config)
    const dataset = await findTable(sql, config.datasetSchema, upload.dataset, requester)
    const form = await c.req.parseBody({ all: true })
    const values = (key: string) => [form[key]].flat().filter((v): v is string => typeof v === 'string')
    const choice = pickReading(Object.fromEntries(READING_OPTION_KEYS.map((k) => [k, values(k)[0]])))
    const pairs: [string, string][] = [
      ['columns', values('column').map(quoteListItem).join(',')],
      ['mode', values('mode')[0] ?? 'insert'],
      ['onError', values('onError')[0] ?? 'abort'],
      ['dryRun', values('dryRun').length > 0 ? 'true' : 'false'],
      ...readingPairs(choice),
    ]
    try {
      const task = await enqueueImport(sql, upload, parseImportOptions(pairs, dataset), config.taskMaxAttempts, requester)
      return c.redirect(`/tasks/${task.id}`, 303)
    } catch (err) {
      if (!isUserError(err)) throw err
      return render(c, await renderPreview(storage, dataset, upload, choice, err.message), 400)
    }
  })

  pages.get('/tasks/:id', async (c) => {
    const task = await getVisibleTask(c, c.req.param('id'))
    const link = signedLink(task, c.get('deps').linkSigner)
    return render(c, <TaskPage task={task} downloadUrl={downloadPath(task.id)} shareUrl={link ? new URL(link.path, c.req.url).href : null} />)
  })

  pages.get('/tasks/:id/status', async (c) => {
    const task = await getVisibleTask(c, c.req.param('id'))
    const isHtmx = c.req.header('HX-Request') === 'true'
    if (c.req.query('go') === 'download' && task.state === 'succeeded') {
      if (isHtmx) return c.body(null, 200, { 'HX-Redirect': downloadPath(task.id) })
      return c.redirect(downloadPath(task.id), 303)
    }
    const fragment = <TaskStatus task={task} downloadUrl={downloadPath(task.id)} autoDownload={isHtmx && task.state === 'succeeded'} />
    return render(c, fragment, isHtmx && isFinished(task) ? HTMX_STOP_POLLING : 200)
  })

  pages.post('/tasks/:id/cancel', async (c) => {
    const task = await getVisibleTask(c, c.req.param('id'))
    // A task that finished meanwhile is left as it ended; its page then shows how.
    await requestCancel(c.get('deps').sql, task.id)
    return c.redirect(`/tasks/${task.id}`, 303)
  })

  pages.post('/tasks/:id/retry', async (c) => {
    const task = await retryDeadTask(c.get('deps'), await getVisibleTask(c, c.req.param('id')))
    return c.redirect(`/tasks/${task.id}`, 303)
  })

  return pages
}

/** A dataset as the signed-in principal's PostgreSQL role sees it (null: it may not read it). */
function findVisibleDataset(c: Context<AppEnv>, name: string) {
  const { sql, config } = c.get('deps')
  return asRole(sql, c.get('principal').dbRole, (tx) => findDataset(tx, config.datasetSchema, name))
}

async function renderPreview(storage: Storage, dataset: Dataset, upload: UploadRow, choice: ReadingChoice, error?: string) {
  // The import's own parser checks the choice: one it would refuse is shown with its reason, and the file as detected.
  try {
    parseImportOptions(readingPairs(choice), dataset)
  } catch (err) {
    if (!isUserError(err) || Object.keys(choice).length === 0) throw err
    return renderPreview(storage, dataset, upload, {}, err.message)
  }
  const preview = await readPreview(storage, dataset, upload, readingPairs(choice))
  const { dialect } = preview
  const proposed = proposeTargets(dataset.columns.map((c) => c.name), preview.columnNames, dialect.header, dialect.renamed)
  return <UploadPreviewPage dataset={dataset} upload={upload} preview={preview} proposed={proposed} choice={choice} error={error} />
}

/**
 * Only the reading options, as given; parseImportOptions checks them before use. A field
 * still at the value detection showed (`shown.<key>`) is no choice: it is detected again.
 */
function pickReading(query: Record<string, string | undefined>): ReadingChoice {
  const choice: ReadingChoice = {}
  for (const key of READING_OPTION_KEYS) {
    const value = query[key]
    if (value !== undefined && value !== '' && value !== query[`shown.${key}`]) choice[key] = value
  }
  return choice
}

const readingPairs = (choice: ReadingChoice): [string, string][] => Object.entries(choice).filter((e): e is [string, string] => e[1] !== undefined)

type FormBody = Record<string, string | File | (string | File)[]>

/** Turns the export form into the same PostgREST-style pairs the API takes, so both share one parser. */
export function formToQuery(form: FormBody): [string, string][] {
  const all = (key: string) => {
    const value = form[key]
    return (Array.isArray(value) ? value : value === undefined ? [] : [value]).map((v) => (typeof v === 'string' ? v : ''))
  }
  const pairs: [string, string][] = []
  const selected = all('select')
  if (selected.length > 0) pairs.push(['select', selected.map(quoteListItem).join(',')])

  const columns = all('filter_column')
  const ops = all('filter_op')
  const values = all('filter_value')
  columns.forEach((column, i) => {
    if (column === '') return
    const op = ops[i] ?? 'eq'
    const value = values[i] ?? ''
    const isList = op === 'in' || op === 'not.in'
    pairs.push([column, `${op}.${isList && !value.startsWith('(') ? `(${value})` : value}`])
  })

  const orderColumn = all('order_column')[0]
  if (orderColumn) pairs.push(['order', `${quoteListItem(orderColumn)}.${all('order_direction')[0] === 'desc' ? 'desc' : 'asc'}`])
  const limit = all('limit')[0]
  if (limit) pairs.push(['limit', limit])
  if (all('gzip').length > 0) pairs.push(['gzip', 'true'])
  if (all('excelSafe').length > 0) pairs.push(['excelSafe', 'true'])
  return pairs
}

const quoteListItem = (name: string) => (/[",.()]/.test(name) || name.trim() !== name ? `"${name.replaceAll('"', '""')}"` : name)
