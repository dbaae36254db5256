import type { Sql } from '../db/client.ts'
import { UserError } from '../errors.ts'
import { countActiveTasks, tooManyActiveTasks } from './queries.ts'

// A token's storage quota (TOKEN_MAX_STORED_BYTES), in SQL: what it holds is its uploads and
// its tasks' result files (exports, error reports), counted as stored, after gzip is inflated.
// An upload in flight holds a reservation of what it may still write, so concurrent uploads
// cannot all see the same free space; the reservation becomes the upload's row when it is stored.

/** How long a reservation lives without renewal: a gateway that died mid-upload frees its token's space after this. */
const RESERVATION_SECONDS = 120
export const RESERVATION_RENEW_MS = 30_000

export type Reservation = { id: string; bytes: number }

/** Bytes the owner's uploads, result files and uploads in flight take. */
export async function storedBytesOf(sql: Sql, ownerId: string): Promise<number> {
  const [row] = await sql<{ bytes: number }[]>`
    select (select coalesce(sum(size), 0) from sluice.uploads where owner_id = ${ownerId})
         + (select coalesce(sum(result_size), 0) from sluice.tasks where owner_id = ${ownerId} and result_key is not null)
         + (select coalesce(sum(bytes), 0) from sluice.storage_reservations where owner_id = ${ownerId} and expires_at > now())
         as bytes`
  return Number(row!.bytes)
}

/** Claims up to `wanted` bytes of what remains of the owner's quota; none left is 507. */
export async function reserveStorage(sql: Sql, ownerId: string, limit: number, wanted: number): Promise<Reservation> {
  return sql.begin(async (tx) => {
    // One reservation per owner at a time, or two uploads would both be granted the same free space.
    await tx`select pg_advisory_xact_lock(hashtext('sluice.stored_bytes'), hashtext(${ownerId}))`
    await tx`delete from sluice.storage_reservations where owner_id = ${ownerId} and expires_at <= now()`
    const remaining = limit - (await storedBytesOf(tx as unknown as Sql, ownerId))
    if (remaining <= 0) throw storageQuotaFull(limit)
    const [row] = await tx<Reservation[]>`
      insert into sluice.storage_reservations (owner_id, bytes, expires_at)
      values (${ownerId}, ${Math.min(wanted, remaining)}, now() + make_interval(secs => ${RESERVATION_SECONDS}))
      returning id, bytes`
    return { id: row!.id, bytes: Number(row!.bytes) }
  })
}

export async function renewReservation(sql: Sql, id: string): Promise<void> {
  await sql`update sluice.storage_reservations set expires_at = now() + make_interval(secs => ${RESERVATION_SECONDS}) where id = ${id}`
}

/** Ends a reservation: the upload failed, or (inside the transaction that records it) it was stored. */
export async function releaseReservation(sql: Sql, id: string): Promise<void> {
  await sql`delete from sluice.storage_reservations where id = ${id}`
}

/**
 * Refuses a new task before any slow work (planning, an upload streaming) when the owner is at
 * a quota: its active tasks (enqueueTask checks again, atomically), or its stored bytes (a
 * running export may overshoot by its own file; no new one starts once over).
 */
export async function refuseOverQuota(sql: Sql, owner: { ownerId: string; maxActiveTasks: number | null; maxStoredBytes: number | null }): Promise<void> {
  if (owner.maxActiveTasks !== null && (await countActiveTasks(sql, owner.ownerId)) >= owner.maxActiveTasks) {
    throw tooManyActiveTasks(owner.maxActiveTasks)
  }
  if (owner.maxStoredBytes !== null && (await storedBytesOf(sql, owner.ownerId)) >= owner.maxStoredBytes) {
    throw storageQuotaFull(owner.maxStoredBytes)
  }
}

const gib = (bytes: number) => `${(bytes / 1024 ** 3).toLocaleString('en-US', { maximumFractionDigits: 2 })} GiB`

export const storageQuotaFull = (limit: number) => new UserError(
  'STORAGE_QUOTA_EXCEEDED',
  `This token's uploads and result files take up its storage limit of ${gib(limit)} (TOKEN_MAX_STORED_BYTES). Stored files are deleted after FILE_RETENTION_HOURS; try again then, or ask an operator for a higher limit.`,
  507,
)

export const uploadOverQuota = (limit: number, remaining: number) => new UserError(
  'STORAGE_QUOTA_EXCEEDED',
  `The file is larger than what remains of this token's storage limit of ${gib(limit)} (TOKEN_MAX_STORED_BYTES): ${remaining.toLocaleString('en-US')} bytes are left, counted after gzip is inflated.`,
  413,
)
