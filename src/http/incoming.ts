import type { IncomingMessage, ServerResponse } from 'node:http'
import { Readable } from 'node:stream'
import type { Context } from 'hono'
import { UserError } from '../errors.ts'
import type { UploadRequest } from '../imports/upload.ts'
import type { AppEnv } from './app.tsx'

/** Node's own request under Hono's, when served by @hono/node-server (always, but for tests of the app alone). */
export function incomingOf(c: Context): IncomingMessage | undefined {
  return (c.env as { incoming?: IncomingMessage } | undefined)?.incoming
}

/**
 * The request as an upload. The body comes straight from Node's request when nothing
 * has read it yet: through the web Request, @hono/node-server turns every chunk into a
 * web stream's and we turn it back, which cost the event loop (shared with every status
 * poll) about a third more CPU per upload (see bench/README.md, Load).
 */
export function uploadRequestOf(c: Context<AppEnv>): UploadRequest {
  const acceptsFormToken = c.get('csrfField') // a form's upload: checkCsrf left the token to the upload reader
  const incoming = incomingOf(c)
  if (incoming && !incoming.readableDidRead && incoming.readableFlowing === null) return { headers: c.req.raw.headers, body: incoming, acceptsFormToken }
  const body = c.req.raw.body
  return { headers: c.req.raw.headers, body: body ? Readable.fromWeb(body as never) : null, acceptsFormToken }
}

/**
 * Aborts when the client hangs up before its answer is sent, so that work done for it
 * (a slow plan, a queued task) stops. Node's response, not the web Request's signal:
 * asking Hono for that builds the whole web Request, which a status poll need not pay for.
 */
export function clientGoneSignal(c: Context): AbortSignal | undefined {
  const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing
  if (!outgoing) return undefined
  const controller = new AbortController()
  const gone = () => {
    if (!outgoing.writableFinished) controller.abort(new UserError('CLIENT_GONE', 'The client closed the connection before the answer was ready.', 400))
  }
  if (outgoing.destroyed || outgoing.socket?.destroyed) gone()
  else outgoing.once('close', gone)
  return controller.signal
}
