import { createHash, randomBytes } from 'node:crypto'
import type { Sql } from '../db/client.ts'
import type { TokenRole } from '../db/schema.ts'
import { UserError } from '../errors.ts'
import { cancelTasksOfOwner, CANCELLED_BY_REVOKE, isUuid } from '../tasks/queries.ts'

// Tokens and browser sessions, in SQL. Only sha256 digests of secrets are stored:
// a token is 256 random bits, so a fast hash is as good as a slow one, and a copy
// of the tables opens nothing.

/** Who is asking: the token behind the request, and the session when it came from a browser. */
export type Principal = {
  tokenId: string
  name: string
  role: TokenRole
  /** PostgreSQL role the principal's queries and tasks run as; null: the gateway's own. */
  dbRole: string | null
  session: { idHash: string; csrfToken: string } | null
}

export type TokenRow = {
  id: string
  name: string
  role: TokenRole
  dbRole: string | null
  createdBy: string | null
  createdAt: Date
  lastUsedAt: Date | null
  revokedAt: Date | null
}

const TOKEN_PREFIX = 'sluice_'

export const newSecret = () => randomBytes(32).toString('base64url')
export const digest = (secret: string) => createHash('sha256').update(secret).digest('hex')

export const isAdmin = (principal: Principal) => principal.role === 'admin'

const TOKEN_COLUMNS = (sql: Sql) => sql`
  id, name, role, db_role as "dbRole", created_by as "createdBy", created_at as "createdAt",
  last_used_at as "lastUsedAt", revoked_at as "revokedAt"`

/**
 * The live token with this secret. Marks it used at most once a minute, without the
 * request waiting: every poll of every script comes through here, and a write on that
 * path would make concurrent requests queue on the token's row lock and its commit wait
 * for the WAL flush behind a running import.
 */
export async function findTokenPrincipal(sql: Sql, secret: string): Promise<Principal | null> {
  const [row] = await sql<(Principal & { stale: boolean })[]>`
    select id as "tokenId", name, role, db_role as "dbRole", null as session,
           last_used_at is null or last_used_at < now() - interval '1 minute' as stale
    from sluice.tokens where token_hash = ${digest(secret)} and revoked_at is null`
  if (!row) return null
  const { stale, ...principal } = row
  if (stale) void markTokenUsed(sql, principal.tokenId).catch(() => {}) // only a hint for the tokens page
  return principal
}

async function markTokenUsed(sql: Sql, tokenId: string): Promise<void> {
  await sql.begin(async (tx) => {
    // Losing this on a crash is harmless: no need to wait for the WAL to reach the disk.
    await tx`set local synchronous_commit = off`
    await tx`
      update sluice.tokens set last_used_at = now()
      where id = (select id from sluice.tokens where id = ${tokenId}
                    and (last_used_at is null or last_used_at < now() - interval '1 minute')
                  for update skip locked)`
  })
}

/** The principal of a live session whose token is still live. */
export async function findSessionPrincipal(sql: Sql, sessionSecret: string): Promise<Principal | null> {
  const [row] = await sql<(Omit<Principal, 'session'> & { idHash: string; csrfToken: string })[]>`
    select t.id as "tokenId", t.name, t.role, t.db_role as "dbRole", s.id_hash as "idHash", s.csrf_token as "csrfToken"
    from sluice.sessions s
    join sluice.tokens t on t.id = s.token_id
    where s.id_hash = ${digest(sessionSecret)} and s.expires_at > now() and t.revoked_at is null`
  if (!row) return null
  const { idHash, csrfToken, ...principal } = row
  return { ...principal, session: { idHash, csrfToken } }
}

export async function openSession(sql: Sql, tokenId: string, hours: number): Promise<{ secret: string; expiresAt: Date }> {
  const secret = newSecret()
  const [row] = await sql<{ expiresAt: Date }[]>`
    insert into sluice.sessions (id_hash, token_id, csrf_token, expires_at)
    values (${digest(secret)}, ${tokenId}, ${newSecret()}, now() + make_interval(hours => ${hours}))
    returning expires_at as "expiresAt"`
  // Expired sessions go on each sign-in: a table that only grows would be a slow leak.
  await sql`delete from sluice.sessions where expires_at < now() - interval '1 day'`
  return { secret, expiresAt: row!.expiresAt }
}

export async function closeSession(sql: Sql, idHash: string): Promise<void> {
  await sql`delete from sluice.sessions where id_hash = ${idHash}`
}

export type NewToken = { name: string; role: TokenRole; dbRole: string | null; createdBy: string | null }

/** Creates a token and returns its secret: the only time anyone sees it. */
export async function createToken(sql: Sql, token: NewToken): Promise<{ row: TokenRow; secret: string }> {
  const name = token.name.trim()
  if (name.length === 0 || name.length > 100) throw new UserError('BAD_TOKEN_NAME', 'A token needs a name of 1 to 100 characters, e.g. "nightly export script".')
  if (token.dbRole !== null) await checkDbRole(sql, token.dbRole)
  const secret = TOKEN_PREFIX + newSecret()
  const [row] = await sql<TokenRow[]>`
    insert into sluice.tokens (name, token_hash, role, db_role, created_by)
    values (${name}, ${digest(secret)}, ${token.role}, ${token.dbRole}, ${token.createdBy})
    returning ${TOKEN_COLUMNS(sql)}`
  return { row: row!, secret }
}

/** The gateway must be allowed to `set role` to it, or every task of the token would fail later. */
async function checkDbRole(sql: Sql, dbRole: string): Promise<void> {
  const [row] = await sql<{ exists: boolean; member: boolean | null; gateway: string }[]>`
    select exists (select 1 from pg_roles where rolname = ${dbRole}) as exists,
           (select pg_has_role(current_user, oid, 'MEMBER') from pg_roles where rolname = ${dbRole}) as member,
           current_user as gateway`
  if (!row!.exists) throw new UserError('UNKNOWN_DB_ROLE', `There is no PostgreSQL role named "${dbRole}".`)
  if (!row!.member) {
    throw new UserError('DB_ROLE_NOT_GRANTED', `The gateway's database user cannot act as "${dbRole}": run GRANT "${dbRole}" TO "${row!.gateway}" first.`)
  }
}

export async function listTokens(sql: Sql): Promise<TokenRow[]> {
  return sql<TokenRow[]>`select ${TOKEN_COLUMNS(sql)} from sluice.tokens order by revoked_at is not null, created_at desc`
}

/**
 * Revokes a token, ends its browser sessions and cancels its tasks: queued ones at once,
 * running ones at their next progress write (within a second or two), as a cancel would.
 */
export async function revokeToken(sql: Sql, id: string): Promise<TokenRow | null> {
  if (!isUuid(id)) return null
  return sql.begin(async (tx) => {
    const [row] = await tx<TokenRow[]>`
      update sluice.tokens set revoked_at = coalesce(revoked_at, now()) where id = ${id}
      returning ${TOKEN_COLUMNS(tx as unknown as Sql)}`
    if (!row) return null
    await tx`delete from sluice.sessions where token_id = ${id}`
    await cancelTasksOfOwner(tx as unknown as Sql, id, CANCELLED_BY_REVOKE)
    return row
  })
}

/**
 * Makes sure an admin can get in. With GATEWAY_ADMIN_TOKEN, that token is registered
 * (once; revoking it in the gateway sticks). Without it, when no live admin token
 * exists, one is generated and returned so the caller can print a sign-in link.
 */
export async function ensureAdminToken(sql: Sql, configured: string | null): Promise<string | null> {
  return sql.begin(async (tx) => {
    // Two gateways starting together must not both mint a token.
    await tx`select pg_advisory_xact_lock(hashtext('sluice.ensureAdminToken'))`
    if (configured !== null) {
      await tx`
        insert into sluice.tokens (name, token_hash, role) values ('GATEWAY_ADMIN_TOKEN', ${digest(configured)}, 'admin')
        on conflict (token_hash) do nothing`
      return null
    }
    const [live] = await tx`select 1 from sluice.tokens where role = 'admin' and revoked_at is null limit 1`
    if (live) return null
    const secret = TOKEN_PREFIX + newSecret()
    await tx`insert into sluice.tokens (name, token_hash, role) values ('first admin (printed at start)', ${digest(secret)}, 'admin')`
    return secret
  })
}
