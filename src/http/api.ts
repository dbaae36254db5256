import { Hono } from 'hono'
import { requesterOf, isAdmin } from '../auth/index.ts'
import { asRole } from '../db/client.ts'
import { findDataset, listDatasets, type Dataset } from '../datasets/index.ts'
import { UserError } from '../errors.ts'
import { requestExport } from '../exports/index.ts'
import { getUpload, requestImport } from '../imports/index.ts'
import { getTask, listRecentTasks, requestCancel, retryTask } from '../tasks/queries.ts'
import { refuseOverQuota } from '../tasks/quotas.ts'
import type { AppEnv } from './app.tsx'
import { clientGoneSignal, uploadRequestOf } from './incoming.ts'
import { isFinished, presentTask } from './present.ts'
import { getVisibleTask, serveTaskFile, taskFinished } from './task-files.ts'

/** The JSON API: everything a script needs, with curl. */
export function apiRoutes() {
  const api = new Hono<AppEnv>()

  api.get('/datasets', async (c) => {
    const { sql, config } = c.get('deps')
    const datasets = await asRole(sql, c.get('principal').dbRole, (tx) => listDatasets(tx, config.datasetSchema))
    return c.json(datasets.map(presentDataset))
  })

  api.get('/datasets/:name', async (c) => {
    const { sql, config } = c.get('deps')
    const name = c.req.param('name')
    const dataset = await asRole(sql, c.get('principal').dbRole, (tx) => findDataset(tx, config.datasetSchema, name))
    if (!dataset) throw new UserError('DATASET_NOT_FOUND', `There is no dataset named "${name}".`, 404)
    return c.json(presentDataset(dataset))
  })

  api.post('/datasets/:name/exports', async (c) => {
    const { sql, config, linkSigner } = c.get('deps')
    const pairs = [...new URL(c.req.url).searchParams.entries()]
    const settings = { schema: config.datasetSchema, maxAttempts: config.taskMaxAttempts }
    const requester = requesterOf(c.get('principal'), config)
    await refuseOverQuota(sql, requester)
    const task = await requestExport(sql, settings, requester, c.req.param('name'), pairs, clientGoneSignal(c))
    c.header('Location', `/api/tasks/${task.id}`)
    return c.json(presentTask(task, origin(c.req.url), linkSigner), 202)
  })

  api.post('/datasets/:name/imports', async (c) => {
    const { sql, config, storage, linkSigner } = c.get('deps')
    const pairs = [...new URL(c.req.url).searchParams.entries()]
    const settings = { schema: config.datasetSchema, maxUploadBytes: config.maxUploadBytes, maxAttempts: config.taskMaxAttempts }
    const task = await requestImport(sql, storage, settings, requesterOf(c.get('principal'), c.get('deps').config), c.req.param('name'), pairs, uploadRequestOf(c))
    c.header('Location', `/api/tasks/${task.id}`)
    return c.json(presentTask(task, origin(c.req.url), linkSigner), 202)
  })

  api.get('/tasks', async (c) => {
    const { sql, linkSigner } = c.get('deps')
    const principal = c.get('principal')
    const tasks = await listRecentTasks(sql, isAdmin(principal) ? null : principal.tokenId)
    return c.json(tasks.map((task) => presentTask(task, origin(c.req.url), linkSigner)))
  })

  api.get('/tasks/:id', async (c) => {
    const task = await getVisibleTask(c, c.req.param('id'))
    if (!isFinished(task)) c.header('Retry-After', '1')
    return c.json(presentTask(task, origin(c.req.url), c.get('deps').linkSigner))
  })

  api.post('/tasks/:id/cancel', async (c) => {
    const seen = await getVisibleTask(c, c.req.param('id'))
    const task = await requestCancel(c.get('deps').sql, seen.id)
    if (!task) throw taskFinished((await getTask(c.get('deps').sql, seen.id))?.state ?? seen.state)
    return c.json(presentTask(task, origin(c.req.url), c.get('deps').linkSigner), 202)
  })

  api.post('/tasks/:id/retry', async (c) => {
    const task = await retryDeadTask(c.get('deps'), await getVisibleTask(c, c.req.param('id')))
    return c.json(presentTask(task, origin(c.req.url), c.get('deps').linkSigner), 202)
  })

  api.on(['GET', 'HEAD'], '/tasks/:id/download', async (c) => serveTaskFile(c, await getVisibleTask(c, c.req.param('id'))))

  return api
}

/** A failed or cancelled task goes back to the queue; an import needs its upload still stored. */
export async function retryDeadTask(deps: AppEnv['Variables']['deps'], task: Awaited<ReturnType<typeof getVisibleTask>>) {
  if (task.state !== 'failed' && task.state !== 'cancelled') {
    throw new UserError('NOT_RETRYABLE', `This task is ${task.state}; only failed or cancelled tasks can be retried.`, 409)
  }
  if (task.kind === 'import') {
    const upload = await getUpload(deps.sql, String(task.params.uploadId ?? ''))
    if (!upload || (await deps.storage.size(upload.storageKey)) === null) {
      throw new UserError('UPLOAD_EXPIRED', 'The uploaded file of this import has expired and was deleted. Upload it again.', 410)
    }
  }
  const retried = await retryTask(deps.sql, task.id)
  if (!retried) throw new UserError('NOT_RETRYABLE', 'This task changed state meanwhile; reload it.', 409)
  if (retried.oldFileKey) await deps.storage.remove(retried.oldFileKey).catch(() => {}) // the orphan sweep gets it otherwise
  return retried.task
}

export const origin = (url: string) => new URL(url).origin

function presentDataset({ name, kind, columns, primaryKey, uniqueKeys, rowEstimate, canImport }: Dataset) {
  return { name, kind, columns: columns.map(({ name, type, nullable }) => ({ name, type, nullable })), primaryKey, uniqueKeys, rowEstimate, canImport }
}
