import fs from 'node:fs/promises'
import path from 'node:path'
import type { Sql } from '../db/client.ts'
import { AREAS, type Storage } from '../storage/index.ts'

// Retention, in three passes. Each pass first changes the database, then deletes
// files: a crash between the two leaves a file nobody refers to, which the orphan
// pass removes later; the other order could leave a task pointing at nothing.
// Several gateways may sweep the same database at once: rows are taken with
// `skip locked`, and deleting a file twice is harmless.

export type SweepSettings = {
  /** Finished files and uploads older than this are deleted. */
  retentionHours: number
  /** A stored file nobody refers to is left alone this long: its task may be about to record it. */
  orphanGraceMs: number
  /** A temp file untouched this long belongs to a writer that died. */
  staleTempMs: number
}

export type SweepCounts = { expiredResults: number; expiredUploads: number; orphanFiles: number; staleTempFiles: number }

const BATCH = 500

export async function sweepStorage(sql: Sql, storage: Storage, settings: SweepSettings): Promise<SweepCounts> {
  return {
    expiredResults: await expireResultFiles(sql, storage),
    expiredUploads: await expireUploads(sql, storage, settings.retentionHours),
    orphanFiles: await removeOrphanFiles(sql, storage, settings.orphanGraceMs),
    staleTempFiles: await removeStaleTempFiles(storage, settings.staleTempMs),
  }
}

/** Export files and error reports past their `result_expires_at`: the task keeps its facts and says the file expired. */
async function expireResultFiles(sql: Sql, storage: Storage): Promise<number> {
  let total = 0
  for (;;) {
    const rows = await sql<{ key: string }[]>`
      with due as (
        select id as due_id, result_key as old_key from sluice.tasks
        where result_key is not null and result_expires_at < now()
        limit ${BATCH}
        for update skip locked
      )
      update sluice.tasks t
      set result_key = null, result_expired_at = now(), updated_at = now()
      from due
      where t.id = due.due_id
      returning due.old_key as key`
    for (const { key } of rows) await removeKey(storage, key)
    total += rows.length
    if (rows.length < BATCH) return total
  }
}

/** Uploads older than the retention period, unless an import still waits for or is reading them. */
async function expireUploads(sql: Sql, storage: Storage, retentionHours: number): Promise<number> {
  let total = 0
  for (;;) {
    const rows = await sql<{ key: string }[]>`
      delete from sluice.uploads u
      where u.id in (
        select id from sluice.uploads
        where created_at < now() - make_interval(hours => ${retentionHours})
          and not exists (
            select from sluice.tasks t
            where t.kind = 'import' and t.state in ('queued', 'running') and t.params->>'uploadId' = uploads.id::text)
        limit ${BATCH}
        for update skip locked)
      returning u.storage_key as key`
    for (const { key } of rows) await removeKey(storage, key)
    total += rows.length
    if (rows.length < BATCH) return total
  }
}

/**
 * Files under exports/, uploads/ and reports/ that no task or upload refers to: left
 * by a crash between writing a file and recording it, or by a task whose file was
 * replaced. Empty day directories of past days go too.
 */
async function removeOrphanFiles(sql: Sql, storage: Storage, graceMs: number): Promise<number> {
  // A running task may have written its file long ago and not yet recorded it (an
  // import writes its error report before its final merge): nothing written since the
  // oldest running task started can be called an orphan.
  const [{ oldestRun }] = (await sql<{ oldestRun: Date | null }[]>`select min(started_at) as "oldestRun" from sluice.tasks where state = 'running'`) as unknown as [{ oldestRun: Date | null }]
  const cutoff = Math.min(Date.now() - graceMs, oldestRun?.getTime() ?? Infinity)
  const today = new Date().toISOString().slice(0, 10)
  let removed = 0
  for (const area of AREAS) {
    for (const day of await listDir(path.join(storage.root, area))) {
      const dayDir = path.join(storage.root, area, day)
      const candidates: string[] = []
      for (const name of await listDir(dayDir)) {
        const key = `${area}/${day}/${name}`
        if (!storage.isKey(key)) continue // not ours: an operator's file is never touched
        const modified = await modifiedAt(path.join(dayDir, name))
        if (modified !== null && modified < cutoff) candidates.push(key)
      }
      removed += await removeUnreferenced(sql, storage, candidates)
      if (day < today) await fs.rmdir(dayDir).catch(() => {}) // fails while not empty: fine
    }
  }
  return removed
}

async function removeUnreferenced(sql: Sql, storage: Storage, keys: string[]): Promise<number> {
  if (keys.length === 0) return 0
  const rows = await sql<{ key: string }[]>`
    select key from unnest(${sql.array(keys)}::text[]) as k(key)
    where not exists (select from sluice.tasks where result_key = k.key)
      and not exists (select from sluice.uploads where storage_key = k.key)`
  for (const { key } of rows) await removeKey(storage, key)
  return rows.length
}

async function removeStaleTempFiles(storage: Storage, staleMs: number): Promise<number> {
  const cutoff = Date.now() - staleMs
  let removed = 0
  for (const name of await listDir(storage.tmpDir)) {
    if (!name.endsWith('.part')) continue
    const file = path.join(storage.tmpDir, name)
    const modified = await modifiedAt(file)
    if (modified !== null && modified < cutoff) {
      await storage.remove(file)
      removed++
    }
  }
  return removed
}

async function removeKey(storage: Storage, key: string): Promise<void> {
  // A key from the database that is not ours (should never happen) is skipped, not followed.
  if (storage.isKey(key)) await storage.remove(key)
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
}

async function modifiedAt(file: string): Promise<number | null> {
  try {
    return (await fs.stat(file)).mtimeMs
  } catch {
    return null // deleted meanwhile
  }
}
