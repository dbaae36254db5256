import { isAdmin, type Principal } from './tokens.ts'

export * from './tokens.ts'
export { loadLinkSigner, createLinkSigner, type LinkSigner } from './signed-links.ts'

/** Tasks, uploads and their files belong to the token that made them; admins see everything. */
export function mayAccess(principal: Principal, ownerId: string | null): boolean {
  return isAdmin(principal) || (ownerId !== null && ownerId === principal.tokenId)
}

/** What a request hands to the capabilities: whose task it is, and as which database role it runs. */
export type Requester = { ownerId: string; dbRole: string | null }
export const requesterOf = (principal: Principal): Requester => ({ ownerId: principal.tokenId, dbRole: principal.dbRole })
