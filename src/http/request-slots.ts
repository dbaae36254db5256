import type { MiddlewareHandler } from 'hono'
import { isAdmin } from '../auth/tokens.ts'
import { UserError } from '../errors.ts'
import type { AppEnv } from './app.tsx'

/**
 * How many of one token's requests run at once; the rest wait their turn, in order.
 *
 * The request pool has ten connections and every request's queries are bounded by
 * REQUEST_STATEMENT_TIMEOUT_MS, but a bound per query is not enough: one token sending
 * slow requests back to back would still hold every connection, one timeout after another.
 * With a few slots per token, the others always find a connection free. A slot is held
 * until the handler has its answer: a download's body streams after that, outside it.
 * Uploads stream their body inside the handler for minutes and hold no connection while
 * they do, so they take no slot (their own bounds are the upload size and the quotas).
 * Admin tokens are the operator's and are not limited.
 */
export function limitRequestsPerToken(options: { running: number; waiting: number; exempt: RegExp }): MiddlewareHandler<AppEnv> {
  const tokens = new Map<string, { running: number; waiting: (() => void)[] }>()
  return async (c, next) => {
    const principal = c.get('principal') as AppEnv['Variables']['principal'] | undefined
    if (!principal || isAdmin(principal) || options.exempt.test(c.req.path)) return next()
    let slots = tokens.get(principal.tokenId)
    if (!slots) tokens.set(principal.tokenId, (slots = { running: 0, waiting: [] }))
    if (slots.running >= options.running) {
      if (slots.waiting.length >= options.waiting) {
        throw new UserError('TOO_MANY_REQUESTS', `This token already has ${options.running} requests running and ${options.waiting} waiting. Wait for their answers before sending more.`, 429, { retryAfterSeconds: 1 })
      }
      await new Promise<void>((resolve) => slots.waiting.push(resolve))
    } else {
      slots.running++
    }
    try {
      await next()
    } finally {
      // The slot passes straight to the next waiter, so `running` stays as it is.
      const nextInLine = slots.waiting.shift()
      if (nextInLine) nextInLine()
      else if (--slots.running === 0) tokens.delete(principal.tokenId)
    }
  }
}
