import { timingSafeEqual } from 'node:crypto'
import type { Context, MiddlewareHandler } from 'hono'
import { deleteCookie, getCookie, setCookie } from 'hono/cookie'
import { Hono } from 'hono'
import {
  closeSession, createToken, findSessionPrincipal, findTokenPrincipal, isAdmin, listTokens, newSecret, openSession, revokeToken,
  type Principal,
} from '../auth/index.ts'
import { TOKEN_ROLES, type TokenRole } from '../db/schema.ts'
import { UserError } from '../errors.ts'
import { SignInPage } from '../../views/sign-in.tsx'
import { TokensPage } from '../../views/tokens.tsx'
import type { AppEnv } from './app.tsx'
import { render } from './render.tsx'

const SESSION_COOKIE = 'sluice_session'
/** Ties the sign-in form to the browser that loaded it (a double-submit check: no session exists yet). */
const SIGN_IN_COOKIE = 'sluice_sign_in'

/** Reachable without signing in. Signed download links carry their own proof. */
const isOpenPath = (path: string) =>
  path === '/healthz' || path === '/sign-in' || path.startsWith('/static/') || path.startsWith('/files/')

const isApi = (path: string) => path === '/api' || path.startsWith('/api/')
const isSafeMethod = (method: string) => method === 'GET' || method === 'HEAD' || method === 'OPTIONS'

/**
 * Every response: a CSP that allows this origin's scripts and styles only (htmx is
 * served from here; the pages have no inline script or style), no framing, no sniffing.
 */
export function securityHeaders(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    await next()
    const headers = c.res.headers
    headers.set('Content-Security-Policy', "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    headers.set('X-Content-Type-Options', 'nosniff')
    headers.set('X-Frame-Options', 'DENY')
    headers.set('Referrer-Policy', 'same-origin')
    headers.set('Cross-Origin-Opener-Policy', 'same-origin')
    headers.set('Cross-Origin-Resource-Policy', 'same-origin')
    if (isTls(c)) headers.set('Strict-Transport-Security', 'max-age=31536000')
  }
}

/**
 * Finds who is asking (a Bearer token, or a browser session) and turns everyone
 * else away: 401 for the API, the sign-in page for pages. A browser session's
 * unsafe requests must also carry its CSRF token and, if the browser says where
 * they came from, come from this origin.
 */
export function authenticate(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (isOpenPath(c.req.path)) return next()
    const { sql } = c.get('deps')
    const principal = await identify(c, sql)
    if (!principal) {
      if (isApi(c.req.path)) {
        c.header('WWW-Authenticate', 'Bearer realm="sluice"')
        throw new UserError('UNAUTHENTICATED', 'Sign in first: send "Authorization: Bearer <token>". An admin creates tokens.', 401)
      }
      if (!isSafeMethod(c.req.method)) throw new UserError('UNAUTHENTICATED', 'Your session has ended. Sign in again, then repeat what you were doing.', 401)
      const next = c.req.path + (new URL(c.req.url).search || '')
      return c.redirect(`/sign-in?next=${encodeURIComponent(next)}`, 303)
    }
    if (principal.session && !isSafeMethod(c.req.method)) await checkCsrf(c, principal.session.csrfToken)
    c.set('principal', principal)
    return next()
  }
}

async function identify(c: Context<AppEnv>, sql: AppEnv['Variables']['deps']['sql']): Promise<Principal | null> {
  const authorization = c.req.header('Authorization')
  if (authorization !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization)
    if (!match) throw new UserError('UNAUTHENTICATED', 'The Authorization header must be "Bearer <token>".', 401)
    const principal = match[1]!.length <= 200 ? await findTokenPrincipal(sql, match[1]!) : null
    // A wrong token is an error even on pages: silently falling back to a cookie would hide it.
    if (!principal) throw new UserError('UNAUTHENTICATED', 'That token is not valid, or it was revoked.', 401)
    return principal
  }
  const cookie = getCookie(c, SESSION_COOKIE)
  if (!cookie || cookie.length > 200) return null
  return findSessionPrincipal(sql, cookie)
}

async function checkCsrf(c: Context<AppEnv>, expected: string): Promise<void> {
  // A browser sends Origin on every cross-site POST; "null" (a sandboxed frame, a data: page,
  // some redirects) is no origin of ours either.
  const origin = c.req.header('Origin')
  if (origin !== undefined && safeHost(origin) !== c.req.header('Host')) {
    throw new UserError('CSRF', 'This request came from another site, so it was refused.', 403)
  }
  // From a header (htmx) or the form body only: a token in a URL leaks through logs and Referer.
  let given = c.req.header('X-CSRF-Token')
  const contentType = c.req.header('Content-Type') ?? ''
  const multipart = contentType.startsWith('multipart/form-data')
  if (given === undefined && multipart && UPLOAD_PATH.test(c.req.path)) {
    // An upload streams: its token is the form's field before the file, checked by the
    // upload reader before a byte of the file is stored (uploadRequestOf).
    c.set('csrfField', (value: string) => sameSecret(value, expected))
    return
  }
  if (given === undefined && (multipart || contentType.startsWith('application/x-www-form-urlencoded'))) {
    // Any other form's body is small (limitFormBodies): Hono keeps it parsed for the handler.
    const form = await c.req.parseBody()
    given = typeof form._csrf === 'string' ? form._csrf : undefined
  }
  if (!given || !sameSecret(given, expected)) {
    throw new UserError('CSRF', 'This form is out of date (or came from another site). Reload the page and try again.', 403)
  }
}

const UPLOAD_PATH = /^\/datasets\/[^/]+\/uploads$/

function safeHost(origin: string): string | null {
  try {
    return new URL(origin).host
  } catch {
    return null
  }
}

function sameSecret(a: string, b: string): boolean {
  const left = Buffer.from(a)
  const right = Buffer.from(b)
  return left.length === right.length && timingSafeEqual(left, right)
}

/** Behind a TLS-terminating proxy only when the operator says to trust it. */
export function isTls(c: Context<AppEnv>): boolean {
  if (new URL(c.req.url).protocol === 'https:') return true
  return c.get('deps').config.trustProxy && c.req.header('X-Forwarded-Proto') === 'https'
}

/** Only paths on this site: `//evil.example` or `/\evil.example` would leave it. */
const localPath = (next: string | undefined) => (next && isLocalPath(next) ? next : '/')

/**
 * A path on this site and nothing else. Browsers drop tabs and line breaks from URLs and
 * read `\` as `/`, so `/%09/evil.example` (decoded: "/\t/evil.example") leaves the site like
 * `//evil.example` does: allow only the characters of a plain path and query.
 */
export function isLocalPath(next: string): boolean {
  if (next.length >= 2000 || next[0] !== '/' || next[1] === '/' || next[1] === '\\') return false
  for (let i = 0; i < next.length; i++) {
    const code = next.charCodeAt(i)
    if (code <= 0x20 || code === 0x7f || code === 0x5c) return false // controls, space, backslash
  }
  return new URL(next, 'http://sluice.invalid').host === 'sluice.invalid'
}

export function requireAdmin(principal: Principal): void {
  if (!isAdmin(principal)) throw new UserError('FORBIDDEN', 'Only an admin may do this.', 403)
}

/** Sign-in and sign-out, token administration as pages and as JSON. */
export function authRoutes() {
  const routes = new Hono<AppEnv>()

  routes.get('/sign-in', (c) => {
    const formKey = getCookie(c, SIGN_IN_COOKIE) ?? newSecret()
    setCookie(c, SIGN_IN_COOKIE, formKey, { httpOnly: true, sameSite: 'Strict', secure: isTls(c), path: '/sign-in', maxAge: 3600 })
    c.header('Cache-Control', 'no-store')
    return render(c, <SignInPage next={localPath(c.req.query('next'))} token={c.req.query('token') ?? ''} formKey={formKey} />)
  })

  routes.post('/sign-in', async (c) => {
    const { sql, config } = c.get('deps')
    const form = await c.req.parseBody()
    const field = (name: string) => (typeof form[name] === 'string' ? (form[name] as string) : '')
    const formKey = getCookie(c, SIGN_IN_COOKIE)
    if (!formKey || !sameSecret(field('_csrf'), formKey)) {
      throw new UserError('CSRF', 'This sign-in form is out of date (or came from another site). Reload it and try again.', 403)
    }
    const token = field('token').trim()
    const principal = token.length > 0 && token.length <= 200 ? await findTokenPrincipal(sql, token) : null
    if (!principal) {
      return render(c, <SignInPage next={localPath(field('next'))} token="" formKey={formKey} error="That token is not valid, or it was revoked." />, 401)
    }
    const session = await openSession(sql, principal.tokenId, config.sessionHours)
    setCookie(c, SESSION_COOKIE, session.secret, { httpOnly: true, sameSite: 'Lax', secure: isTls(c), path: '/', expires: session.expiresAt })
    deleteCookie(c, SIGN_IN_COOKIE, { path: '/sign-in' })
    return c.redirect(localPath(field('next')), 303)
  })

  routes.post('/sign-out', async (c) => {
    const principal = c.get('principal')
    if (principal.session) await closeSession(c.get('deps').sql, principal.session.idHash)
    deleteCookie(c, SESSION_COOKIE, { path: '/' })
    return c.redirect('/sign-in', 303)
  })

  routes.get('/tokens', async (c) => {
    requireAdmin(c.get('principal'))
    return render(c, <TokensPage tokens={await listTokens(c.get('deps').sql)} />)
  })

  routes.post('/tokens', async (c) => {
    const principal = c.get('principal')
    requireAdmin(principal)
    const { sql } = c.get('deps')
    const form = await c.req.parseBody()
    try {
      const { row, secret } = await createToken(sql, parseNewToken((k) => (typeof form[k] === 'string' ? (form[k] as string) : undefined), principal))
      return render(c, <TokensPage tokens={await listTokens(sql)} created={{ name: row.name, secret }} />, 201)
    } catch (err) {
      if (!(err instanceof UserError)) throw err
      return render(c, <TokensPage tokens={await listTokens(sql)} error={err.message} />, err.status)
    }
  })

  routes.post('/tokens/:id/revoke', async (c) => {
    requireAdmin(c.get('principal'))
    const row = await revokeToken(c.get('deps').sql, c.req.param('id'))
    if (!row) throw new UserError('TOKEN_NOT_FOUND', 'There is no token with that id.', 404)
    return c.redirect('/tokens', 303)
  })

  routes.get('/api/tokens', async (c) => {
    requireAdmin(c.get('principal'))
    return c.json(await listTokens(c.get('deps').sql))
  })

  routes.post('/api/tokens', async (c) => {
    const principal = c.get('principal')
    requireAdmin(principal)
    const body = await readJsonObject(c)
    const read = (k: string) => (typeof body[k] === 'string' ? (body[k] as string) : c.req.query(k))
    const { row, secret } = await createToken(c.get('deps').sql, parseNewToken(read, principal))
    return c.json({ ...row, token: secret }, 201)
  })

  routes.delete('/api/tokens/:id', async (c) => {
    requireAdmin(c.get('principal'))
    const row = await revokeToken(c.get('deps').sql, c.req.param('id'))
    if (!row) throw new UserError('TOKEN_NOT_FOUND', 'There is no token with that id.', 404)
    return c.json(row)
  })

  return routes
}

function parseNewToken(read: (key: string) => string | undefined, creator: Principal) {
  const role = (read('role') ?? 'user') as TokenRole
  if (!TOKEN_ROLES.includes(role)) throw new UserError('BAD_TOKEN_ROLE', `role must be one of ${TOKEN_ROLES.join(', ')}.`)
  const dbRole = read('dbRole')?.trim() || null
  if (dbRole !== null && dbRole.length > 63) throw new UserError('UNKNOWN_DB_ROLE', 'A PostgreSQL role name has at most 63 characters.')
  return { name: read('name') ?? '', role, dbRole, createdBy: creator.tokenId }
}

/** A JSON body when one was sent; query parameters serve curl users who send none. */
async function readJsonObject(c: Context<AppEnv>): Promise<Record<string, unknown>> {
  if (!(c.req.header('Content-Type') ?? '').includes('json')) return {}
  const text = await c.req.text()
  if (text.length > 10_000) throw new UserError('BODY_TOO_LARGE', 'The JSON body is too large.', 413)
  try {
    const value: unknown = JSON.parse(text)
    if (value && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>
  } catch {
    // answered below
  }
  throw new UserError('BAD_JSON', 'The body must be a JSON object, e.g. {"name": "nightly export", "role": "user"}.')
}
