import type { IncomingMessage } from 'node:http'
import { Readable } from 'node:stream'
import type { Context } from 'hono'
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
