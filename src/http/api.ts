import { Hono } from 'hono'
import { listDatasets } from '../datasets/index.ts'
import { UserError } from '../errors.ts'
import { requestExport } from '../exports/index.ts'
import { requestImport } from '../imports/index.ts'
import { getTask, listRecentTasks, requestCancel } from '../tasks/queries.ts'
import type { AppEnv } from './app.tsx'
import { serveFile } from './download.ts'
import { isFinished, presentTask } from './present.ts'

/** The JSON API: everything a script needs, with curl. */
export function apiRoutes() {
  const api = new Hono<AppEnv>()

  api.get('/datasets', async (c) => {
    const { sql, config } = c.get('deps')
    const datasets = await listDatasets(sql, config.datasetSchema)
    return c.json(datasets.map(({ name, kind, columns, primaryKey, uniqueKeys, rowEstimate }) => ({
      name, kind, columns: columns.map(({ name, type, nullable }) => ({ name, type, nullable })), primaryKey, uniqueKeys, rowEstimate,
    })))
  })

  api.post('/datasets/:name/exports', async (c) => {
    const { sql, config } = c.get('deps')
    const pairs = [...new URL(c.req.url).searchParams.entries()]
    const task = await requestExport(sql, { schema: config.datasetSchema, maxAttempts: config.taskMaxAttempts }, c.req.param('name'), pairs)
    c.header('Location', `/api/tasks/${task.id}`)
    return c.json(presentTask(task, origin(c.req.url)), 202)
  })

  api.post('/datasets/:name/imports', async (c) => {
    const { sql, config, storage } = c.get('deps')
    const pairs = [...new URL(c.req.url).searchParams.entries()]
    const settings = { schema: config.datasetSchema, maxUploadBytes: config.maxUploadBytes, maxAttempts: config.taskMaxAttempts }
    const task = await requestImport(sql, storage, settings, c.req.param('name'), pairs, c.req.raw)
    c.header('Location', `/api/tasks/${task.id}`)
    return c.json(presentTask(task, origin(c.req.url)), 202)
  })

  api.get('/tasks', async (c) => {
    const tasks = await listRecentTasks(c.get('deps').sql)
    return c.json(tasks.map((task) => presentTask(task, origin(c.req.url))))
  })

  api.get('/tasks/:id', async (c) => {
    const task = await getTask(c.get('deps').sql, c.req.param('id'))
    if (!task) throw taskNotFound()
    if (!isFinished(task)) c.header('Retry-After', '1')
    return c.json(presentTask(task, origin(c.req.url)))
  })

  api.post('/tasks/:id/cancel', async (c) => {
    const task = await requestCancel(c.get('deps').sql, c.req.param('id'))
    if (!task) throw taskNotFound()
    return c.json(presentTask(task, origin(c.req.url)), 202)
  })

  api.on(['GET', 'HEAD'], '/tasks/:id/download', async (c) => {
    const { sql, storage } = c.get('deps')
    const task = await getTask(sql, c.req.param('id'))
    if (!task) throw taskNotFound()
    // An export's file, or an import's error report (kept when the import failed, too).
    if (!task.resultKey || !(task.state === 'succeeded' || (task.kind === 'import' && task.state === 'failed'))) {
      throw new UserError('NOT_READY', `This task is ${task.state} and has no file${task.state === 'queued' || task.state === 'running' ? ' yet' : ''}.`, 409)
    }
    const size = await storage.size(task.resultKey)
    if (size === null || (task.resultExpiresAt && task.resultExpiresAt < new Date())) {
      throw new UserError('FILE_EXPIRED', 'This file has expired and was removed. Run the export again.', 404)
    }
    return serveFile(c, {
      path: storage.pathOf(task.resultKey),
      size,
      sha256: task.resultSha256 ?? '',
      name: task.resultName ?? 'export.csv',
      contentType: task.resultKey.endsWith('.gz') ? 'application/gzip' : 'text/csv; charset=utf-8',
    })
  })

  return api
}

const taskNotFound = () => new UserError('TASK_NOT_FOUND', 'There is no task with that id.', 404)
export const origin = (url: string) => new URL(url).origin
