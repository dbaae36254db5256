import { createHmac, timingSafeEqual } from 'node:crypto'
import type { Sql } from '../db/client.ts'
import { newSecret } from './tokens.ts'

// Download links that work without a session, for curl and for sharing: the task id,
// an expiry and an HMAC over both and the file's storage key. A link dies when it
// expires, when the file is replaced (a retried task writes a new key) or removed.

export type LinkSigner = {
  /** A path with query string, valid until `expiresAt`. */
  sign: (taskId: string, fileKey: string, expiresAt: Date) => string
  verify: (taskId: string, fileKey: string, expires: string | undefined, signature: string | undefined) => 'valid' | 'expired' | 'invalid'
}

/** The key is made once per database, so every gateway process on it accepts every link. */
export async function loadLinkSigner(sql: Sql): Promise<LinkSigner> {
  await sql`insert into sluice.secrets (name, value) values ('download_link_key', ${newSecret()}) on conflict (name) do nothing`
  const [row] = await sql<{ value: string }[]>`select value from sluice.secrets where name = 'download_link_key'`
  return createLinkSigner(Buffer.from(row!.value, 'base64url'))
}

export function createLinkSigner(key: Buffer): LinkSigner {
  const mac = (taskId: string, fileKey: string, expires: number) =>
    createHmac('sha256', key).update(`${taskId}\n${fileKey}\n${expires}`).digest()

  return {
    sign(taskId, fileKey, expiresAt) {
      const expires = Math.floor(expiresAt.getTime() / 1000)
      return `/files/${taskId}?expires=${expires}&signature=${mac(taskId, fileKey, expires).toString('base64url')}`
    },
    verify(taskId, fileKey, expires, signature) {
      if (!expires || !/^\d{1,12}$/.test(expires) || !signature) return 'invalid'
      const expected = mac(taskId, fileKey, Number(expires))
      const given = Buffer.from(signature, 'base64url')
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) return 'invalid'
      return Number(expires) * 1000 < Date.now() ? 'expired' : 'valid'
    },
  }
}
