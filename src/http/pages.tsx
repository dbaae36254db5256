import { readFileSync } from 'node:fs'
import { Hono } from 'hono'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import { findDataset, listDatasets } from '../datasets/index.ts'
import { isUserError, UserError } from '../errors.ts'
import { requestExport } from '../exports/index.ts'
import { getTask, listRecentTasks, requestCancel } from '../tasks/queries.ts'
import { DatasetPage } from '../../views/dataset.tsx'
import { HomePage } from '../../views/home.tsx'
import { TaskPage, TaskStatus } from '../../views/task.tsx'
import type { AppEnv } from './app.tsx'
import { downloadPath, isFinished } from './present.ts'

const CSS = readFileSync(new URL('../../views/static/sluice.css', import.meta.url))

/** htmx stops polling an element whose response has this status. */
const HTMX_STOP_POLLING = 286 as ContentfulStatusCode

/** Server-rendered pages: plain HTML forms that htmx improves when JavaScript is on. */
export function pageRoutes() {
  const pages = new Hono<AppEnv>()

  pages.get('/static/sluice.css', (c) => c.body(CSS, 200, { 'Content-Type': 'text/css; charset=utf-8', 'Cache-Control': 'public, max-age=3600' }))

  pages.get('/', async (c) => {
    const { sql, config } = c.get('deps')
    const [datasets, tasks] = await Promise.all([listDatasets(sql, config.datasetSchema), listRecentTasks(sql, 20)])
    return c.html(<HomePage datasets={datasets} tasks={tasks} schema={config.datasetSchema} />)
  })

  pages.get('/datasets/:name', async (c) => {
    const { sql, config } = c.get('deps')
    const dataset = await findDataset(sql, config.datasetSchema, c.req.param('name'))
    if (!dataset) throw new UserError('DATASET_NOT_FOUND', `There is no dataset named "${c.req.param('name')}".`, 404)
    return c.html(<DatasetPage dataset={dataset} />)
  })

  pages.post('/datasets/:name/exports', async (c) => {
    const { sql, config } = c.get('deps')
    const name = c.req.param('name')
    const form = await c.req.parseBody({ all: true })
    try {
      const task = await requestExport(sql, { schema: config.datasetSchema, maxAttempts: config.taskMaxAttempts }, name, formToQuery(form))
      return c.redirect(`/tasks/${task.id}`, 303)
    } catch (err) {
      const dataset = isUserError(err) && err.code !== 'DATASET_NOT_FOUND' ? await findDataset(sql, config.datasetSchema, name) : null
      if (!dataset || !isUserError(err)) throw err
      return c.html(<DatasetPage dataset={dataset} error={err.message} />, 400)
    }
  })

  pages.get('/tasks/:id', async (c) => {
    const task = await getTask(c.get('deps').sql, c.req.param('id'))
    if (!task) throw new UserError('TASK_NOT_FOUND', 'There is no task with that id.', 404)
    return c.html(<TaskPage task={task} downloadUrl={downloadPath(task.id)} />)
  })

  pages.get('/tasks/:id/status', async (c) => {
    const task = await getTask(c.get('deps').sql, c.req.param('id'))
    if (!task) throw new UserError('TASK_NOT_FOUND', 'There is no task with that id.', 404)
    const isHtmx = c.req.header('HX-Request') === 'true'
    if (c.req.query('go') === 'download' && task.state === 'succeeded') {
      if (isHtmx) return c.body(null, 200, { 'HX-Redirect': downloadPath(task.id) })
      return c.redirect(downloadPath(task.id), 303)
    }
    const fragment = <TaskStatus task={task} downloadUrl={downloadPath(task.id)} autoDownload={isHtmx && task.state === 'succeeded'} />
    return c.html(fragment, isHtmx && isFinished(task) ? HTMX_STOP_POLLING : 200)
  })

  pages.post('/tasks/:id/cancel', async (c) => {
    const task = await requestCancel(c.get('deps').sql, c.req.param('id'))
    if (!task) throw new UserError('TASK_NOT_FOUND', 'There is no task with that id.', 404)
    return c.redirect(`/tasks/${task.id}`, 303)
  })

  return pages
}

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
  return pairs
}

const quoteListItem = (name: string) => (/[",.()]/.test(name) || name.trim() !== name ? `"${name.replaceAll('"', '""')}"` : name)
