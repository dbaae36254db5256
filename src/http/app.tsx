import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { Hono, type MiddlewareHandler } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import type { LinkSigner, Principal } from '../auth/index.ts'
import type { Config } from '../config.ts'
import type { Sql } from '../db/client.ts'
import { isStatementTimeout, isTransient, isUserError, nameSqlState, sqlStateOf, UserError } from '../errors.ts'
import type { Storage } from '../storage/index.ts'
import { ErrorPage } from '../../views/error-page.tsx'
import { apiRoutes } from './api.ts'
import { uploadApiRoutes } from './uploads.ts'
import { incomingOf } from './incoming.ts'
import { authenticate, authRoutes, securityHeaders } from './auth.tsx'
import { pageRoutes } from './pages.tsx'
import { render } from './render.tsx'
import { limitRequestsPerToken } from './request-slots.ts'
import { signedFileRoutes } from './task-files.ts'

export type Deps = {
  sql: Sql
  config: Config
  storage: Storage
  linkSigner: LinkSigner
  /** True once the database answered and the migrations ran. */
  isReady: () => Promise<boolean>
}

/** `principal` is set on every route but the open ones (health, sign-in, static files, signed links). */
export type AppEnv = {
  Variables: {
    deps: Deps
    requestId: string
    principal: Principal
    /** Set by the CSRF check for a form's streamed upload, whose token is a field in the body. */
    csrfField?: (value: string) => boolean
  }
}

const require = createRequire(import.meta.url)
// Served from node_modules under our own path: there is no CDN on the machines this runs on.
const HTMX = readFileSync(require.resolve('htmx.org/dist/htmx.min.js'))

/** Uploads stream to disk under MAX_UPLOAD_BYTES; every other body is a small form or JSON. */
const UPLOAD_PATH = /^\/(api\/)?datasets\/[^/]+\/(uploads|imports)$/
const FORM_BODY_LIMIT = 1024 * 1024

function limitFormBodies(): MiddlewareHandler<AppEnv> {
  const limit = bodyLimit({
    maxSize: FORM_BODY_LIMIT,
    onError: () => {
      throw new UserError('BODY_TOO_LARGE', `This request's body is over ${FORM_BODY_LIMIT / 1024} KiB; only uploads may be larger.`, 413)
    },
  })
  // GET and HEAD carry no body we read. Asking for one (`c.req.raw.body`) makes
  // @hono/node-server build a full web Request with an AbortController: that was most
  // of a status poll's cost, and polls are the gateway's commonest request.
  return (c, next) => (UPLOAD_PATH.test(c.req.path) || c.req.method === 'GET' || c.req.method === 'HEAD' ? next() : limit(c, next))
}

/**
 * A response sent before the request's body has all arrived (an upload refused at its
 * size limit, a 404 to a large POST) ends the connection. Otherwise the client may send
 * its next request on that connection just as the server closes it, after giving up on
 * the rest of the body (@hono/node-server drains for 500 ms, then closes): the next
 * request fails with "other side closed" (found by test/fuzz.test.ts).
 */
function closeWhenBodyUnread(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    await next()
    const incoming = incomingOf(c)
    if (incoming && !incoming.complete) c.header('Connection', 'close')
  }
}

export function createApp(deps: Deps) {
  const app = new Hono<AppEnv>()

  app.use(async (c, next) => {
    c.set('deps', deps)
    c.set('requestId', crypto.randomUUID())
    await next()
  })
  app.use(closeWhenBodyUnread())
  app.use(securityHeaders())
  app.use(limitFormBodies())
  app.use(authenticate())
  app.use(limitRequestsPerToken({ running: deps.config.tokenMaxConcurrentRequests, waiting: 100, exempt: UPLOAD_PATH }))

  app.get('/healthz', async (c) => {
    const ok = await deps.isReady().catch(() => false)
    return c.json({ ok }, ok ? 200 : 503)
  })

  app.get('/static/htmx.min.js', (c) => {
    c.header('Cache-Control', 'public, max-age=86400')
    return c.body(HTMX, 200, { 'Content-Type': 'text/javascript; charset=utf-8' })
  })

  app.route('/', authRoutes())
  app.route('/', signedFileRoutes())
  app.route('/api', apiRoutes())
  app.route('/api', uploadApiRoutes())
  app.route('/', pageRoutes())

  app.notFound((c) => {
    if (c.req.path.startsWith('/api/')) return c.json({ error: 'Not found', code: 'NOT_FOUND' }, 404)
    return render(c, <ErrorPage title="Not found" message="There is nothing at this address." />, 404)
  })

  app.onError((err, c) => {
    const isApi = c.req.path.startsWith('/api/')
    // A form body that cannot be parsed (multipart without its boundary, a cut body) is the
    // sender's mistake, not ours. The runtime's TypeError carries no code: only its message says so.
    if (err instanceof TypeError && /parse body as FormData/i.test(err.message)) {
      err = new UserError('BAD_FORM', 'The form body could not be read: send it as application/x-www-form-urlencoded, or multipart/form-data with its boundary.', 400)
    }
    if (isUserError(err)) {
      if (err.status === 401) c.header('WWW-Authenticate', 'Bearer realm="sluice"')
      if (err.retryAfterSeconds !== null) c.header('Retry-After', String(err.retryAfterSeconds))
      if (isApi) return c.json({ error: err.message, code: err.code, ...(err.sqlState && { sqlState: err.sqlState }) }, err.status)
      return render(c, <ErrorPage title="That did not work" message={err.message} />, err.status)
    }
    // Error codes are names (README, "Error codes"); the SQLSTATE, if any, goes beside it.
    const sqlState = sqlStateOf(err)
    if (isStatementTimeout(err)) {
      // Not our failure nor the database's: this request asked for more work than one may.
      const limit = deps.config.requestStatementTimeoutMs
      const message = `The database took longer than ${limit.toLocaleString('en-US')} ms (REQUEST_STATEMENT_TIMEOUT_MS) to answer this request, so it was stopped. Narrow the filters, or ask the operator to raise the limit.`
      if (isApi) return c.json({ error: message, code: 'STATEMENT_TIMEOUT', sqlState }, 503)
      return render(c, <ErrorPage title="Too slow" message={message} />, 503)
    }
    if (isTransient(err)) {
      // The database is restarting or unreachable: say so, and when to try again.
      c.header('Retry-After', '5')
      const message = 'The database is not answering right now. Try again in a few seconds.'
      if (isApi) return c.json({ error: message, code: 'DATABASE_UNAVAILABLE', ...(sqlState && { sqlState }) }, 503)
      return render(c, <ErrorPage title="Unavailable" message={message} />, 503)
    }
    console.error(`[http] ${c.req.method} ${c.req.path} request ${c.get('requestId')} failed:`, err)
    const message = 'Something failed on our side. Try again; if it keeps failing, tell the operator this request id: ' + c.get('requestId')
    if (isApi) return c.json({ error: message, code: sqlState ? nameSqlState(sqlState) : 'INTERNAL', ...(sqlState && { sqlState }) }, 500)
    return render(c, <ErrorPage title="Something failed" message={message} />, 500)
  })

  return app
}
