import type { Context } from 'hono'
import { Hono } from 'hono'
import type { Principal } from '../auth/index.ts'
import { mayAccess } from '../auth/index.ts'
import { UserError } from '../errors.ts'
import { getTask, type TaskRow } from '../tasks/queries.ts'
import type { AppEnv } from './app.tsx'
import { serveFile } from './download.ts'
import { hasExpiredFile } from './present.ts'

export const taskNotFound = () => new UserError('TASK_NOT_FOUND', 'There is no task with that id.', 404)
export const taskFinished = (state: string) => new UserError('TASK_FINISHED', `This task has already ${state}; there is nothing to cancel.`, 409)

/** The task, if this principal may see it; someone else's task is "not found", not "forbidden". */
export async function getVisibleTask(c: Context<AppEnv>, id: string): Promise<TaskRow> {
  const task = await getTask(c.get('deps').sql, id)
  if (!task || !mayAccess(c.get('principal') as Principal, task.ownerId)) throw taskNotFound()
  return task
}

/** An export's file, or an import's error report (kept when the import failed, too). */
export async function serveTaskFile(c: Context<AppEnv>, task: TaskRow): Promise<Response> {
  const { storage } = c.get('deps')
  if (hasExpiredFile(task)) {
    throw new UserError('FILE_EXPIRED', `This file was kept until ${task.resultExpiresAt?.toISOString() ?? 'its expiry'} and has been deleted. Run the task again.`, 410)
  }
  if (!task.resultKey || !(task.state === 'succeeded' || (task.kind === 'import' && task.state === 'failed'))) {
    throw new UserError('NOT_READY', `This task is ${task.state} and has no file${task.state === 'queued' || task.state === 'running' ? ' yet' : ''}.`, 409)
  }
  const size = await storage.size(task.resultKey)
  if (size === null) throw new UserError('FILE_EXPIRED', 'This file is no longer stored. Run the task again.', 410)
  return serveFile(c, {
    path: storage.pathOf(task.resultKey),
    size,
    sha256: task.resultSha256 ?? '',
    name: task.resultName ?? 'export.csv',
    contentType: task.resultKey.endsWith('.gz') ? 'application/gzip' : 'text/csv; charset=utf-8',
  })
}

/**
 * `/files/:id?expires=&signature=`: downloads by signed link, without a session.
 * The link must be intact and unexpired, and the token that made the task not revoked.
 */
export function signedFileRoutes() {
  const routes = new Hono<AppEnv>()
  routes.on(['GET', 'HEAD'], '/files/:id', async (c) => {
    const { sql, linkSigner } = c.get('deps')
    const task = await getTask(sql, c.req.param('id'))
    const verdict = task?.resultKey ? linkSigner.verify(task.id, task.resultKey, c.req.query('expires'), c.req.query('signature')) : 'invalid'
    if (verdict === 'expired') throw new UserError('LINK_EXPIRED', 'This download link has expired. Ask for a new one (the task page or its JSON has it).', 410)
    if (verdict === 'invalid' || !task) {
      throw new UserError('LINK_INVALID', 'This download link is not valid: it was changed, or the file it pointed to was replaced.', 403)
    }
    if (task.ownerId !== null) {
      const [owner] = await sql`select revoked_at is not null as revoked from sluice.tokens where id = ${task.ownerId}`
      if (!owner || owner.revoked) throw new UserError('LINK_REVOKED', 'The token this file was made with has been revoked, and its links with it.', 403)
    }
    return serveTaskFile(c, task)
  })
  return routes
}
