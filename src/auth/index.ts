import type { Config } from '../config.ts'
import { isAdmin, type Principal } from './tokens.ts'

export * from './tokens.ts'
export { loadLinkSigner, createLinkSigner, type LinkSigner } from './signed-links.ts'

/** Tasks, uploads and their files belong to the token that made them; admins see everything. */
export function mayAccess(principal: Principal, ownerId: string | null): boolean {
  return isAdmin(principal) || (ownerId !== null && ownerId === principal.tokenId)
}

/**
 * What a request hands to the capabilities: whose task it is, as which database role it runs,
 * and the token's quotas (null: none).
 */
export type Requester = { ownerId: string; dbRole: string | null; maxActiveTasks: number | null; maxStoredBytes: number | null }

/** Admin tokens have no quotas: they are the operators, and must be able to work when a user's token is stuck at its limit. */
export const requesterOf = (principal: Principal, limits: Pick<Config, 'tokenMaxActiveTasks' | 'tokenMaxStoredBytes'>): Requester => ({
  ownerId: principal.tokenId,
  dbRole: principal.dbRole,
  maxActiveTasks: isAdmin(principal) ? null : limits.tokenMaxActiveTasks,
  maxStoredBytes: isAdmin(principal) ? null : limits.tokenMaxStoredBytes,
})
