// Crash safety at any instant (issue 11): a gateway is killed with SIGKILL at random
// instants while an upload streams in, an import loads and an export writes; a new
// gateway starts on the same database and storage, and every time nothing is half
// done: imports all or nothing, exports whole or re-run, no task left held, no upload
// row pointing at a missing file, and nothing left in tmp/ once the sweep has run.
// CRASH_SEED=<n> replays a run; CI=true uses a fixed seed.
import assert from 'node:assert/strict'
import { createHash, randomInt } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm, utimes } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { startChildGateway, type ChildGateway } from './support/child-gateway.ts'
import type { TaskJson } from './support/gateway.ts'
import { waitFor } from './support/wait.ts'

const ROUNDS = 20
const DEFAULT_CI_SEED = 11
const LEASE_SECONDS = 2
const KILL_WINDOW_MS = 4_000 // the kill lands this long after all three started, at most: past the end of each, at times
const IMPORT_ROWS = 80_000 // about 5 MB, loaded in about 2-3 s (the trigger's sleeps)
const UPLOAD_ROWS = 40_000 // about 2.5 MB, streamed over the first 40% of the window, then loaded in about a second
const UPLOAD_MS = KILL_WINDOW_MS * 0.4
const SLEEP_PER_100_ROWS_S = 0.002
const UPLOAD_CHUNK = 64 * 1024
const EXPORT_ROWS = 1_200 // about 3 s to export (pg_sleep per row: the server waits, the CPU does not)
const KEYS_PER_ROUND = 1_000_000 // round r's import has keys r*1e6 + 1…, its streamed upload r*1e6 + 500 001…
const UPLOAD_KEY_OFFSET = 500_000
// What the sweep promises (src/gateway.ts, src/retention/sweep.ts): a .part untouched for
// six hours and an unreferenced stored file untouched for an hour are removed. The test
// ages the dead gateway's leftovers past those marks instead of waiting.
const STALE_TEMP_AGE_MS = 7 * 3600_000
const ORPHAN_AGE_MS = 2 * 3600_000
const AREAS = ['exports', 'uploads', 'reports']

let db: TestDatabase
const cleanups: (() => Promise<unknown>)[] = []

before(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe('create table crash_rows (id bigint primary key, round int not null, note text not null)')
  // A few MB load in well under a second: a short sleep every 100th row stretches the load
  // (COPY, or the staged merge) over the window without costing CPU. A BEFORE trigger keeps the direct path.
  await db.sql.unsafe(`create function crash_rows_slowly() returns trigger language plpgsql as $$
    begin
      if new.id % 100 = 0 then perform pg_sleep(${SLEEP_PER_100_ROWS_S}); end if;
      return new;
    end $$`)
  await db.sql.unsafe('create trigger crash_rows_slowly before insert on crash_rows for each row execute function crash_rows_slowly()')
  await db.sql.unsafe(`create view crash_export as select g as n, repeat('y', 100) || pg_sleep(0.0015)::text as filler from generate_series(1, ${EXPORT_ROWS}) g`)
})

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
  await db?.drop()
})

test(`SIGKILL at ${ROUNDS} random instants during an upload, an import and an export: a restart finds nothing half done`, { timeout: 360_000 }, async (t) => {
  const seed = chooseSeed()
  t.diagnostic(`CRASH_SEED=${seed} (set it to replay this run)`)
  const random = mulberry32(seed)
  const storageDir = await mkdtemp(path.join(os.tmpdir(), 'sluice-crash-'))
  cleanups.push(() => rm(storageDir, { recursive: true, force: true }))
  const checkedUploads = new Set<string>()
  let gateway = await childGateway(storageDir)
  const landed = new Map<string, number>() // what each kill interrupted, for the summary
  const tally = (what: string) => landed.set(what, (landed.get(what) ?? 0) + 1)

  for (let round = 0; round < ROUNDS; round++) {
    const delayMs = Math.floor(random() * KILL_WINDOW_MS)
    const mode = random() < 0.5 ? 'insert' : 'upsert' // upsert goes through the staged merge: another commit path
    const importKeys = round * KEYS_PER_ROUND
    const uploadKeys = importKeys + UPLOAD_KEY_OFFSET
    const uploadFile = csv(round, uploadKeys, UPLOAD_ROWS)
    const uploadSha = sha256(uploadFile)

    const importId = await requestTask(gateway, `/api/datasets/crash_rows/imports?mode=${mode}`, { method: 'POST', body: csv(round, importKeys, IMPORT_ROWS), headers: { 'Content-Type': 'text/csv' } })
    const exportId = await requestTask(gateway, '/api/datasets/crash_export/exports', { method: 'POST' })
    const streamed = streamUpload(gateway, uploadFile, UPLOAD_CHUNK, (UPLOAD_MS * UPLOAD_CHUNK) / uploadFile.length)
    await sleep(delayMs)
    gateway.kill('SIGKILL')
    assert.equal((await gateway.waitForExit()).signal, 'SIGKILL')
    const upload = await streamed
    const atKill = await taskStates([importId, exportId, upload.taskId])
    const [lease] = await db.sql<{ left: number | null }[]>`select max(extract(epoch from lease_expires_at - now()))::float8 as left from sluice.tasks where state = 'running'`
    assert.ok((lease!.left ?? 0) <= LEASE_SECONDS, `round ${round}: every lease the dead gateway held lapses within ${LEASE_SECONDS} s (${lease!.left} s left)`)
    assert.ok(isAllOrNothing(await countKeys(importKeys), IMPORT_ROWS), `round ${round}: the import is all or nothing at the kill`)
    assert.ok(isAllOrNothing(await countKeys(uploadKeys), UPLOAD_ROWS), `round ${round}: the streamed upload's import is all or nothing at the kill`)
    const leftovers = await ageLeftovers(storageDir)

    gateway = await childGateway(storageDir)
    const settled = await waitFor(`round ${round}: every task to end after the restart`, async () => {
      const [row] = await db.sql<{ held: number }[]>`select count(*)::int as held from sluice.tasks where state in ('queued', 'running')`
      return row!.held === 0
    }, 60_000).then(() => Date.now())

    const [importTask] = await db.sql<{ state: string; attempts: number; error: string | null }[]>`select state, attempts, error from sluice.tasks where id = ${importId}`
    assert.equal(importTask!.state, 'succeeded', `round ${round}: the import ends well (${importTask!.error})`)
    assert.equal(await countKeys(importKeys), IMPORT_ROWS, `round ${round}: the import loaded every row once`)
    const uploadImports = await db.sql<{ id: string; state: string; error: string | null }[]>`
      select t.id, t.state, t.error from sluice.tasks t join sluice.uploads u on t.params->>'uploadId' = u.id::text
      where t.kind = 'import' and u.sha256 = ${uploadSha}`
    if (upload.taskId) assert.deepEqual(uploadImports.map((r) => r.id), [upload.taskId], `round ${round}: the answered upload has its import`)
    assert.ok(uploadImports.length <= 1, `round ${round}: one import for the streamed upload at most`)
    const uploadLoaded = uploadImports[0]?.state === 'succeeded'
    if (uploadImports[0]) assert.equal(uploadImports[0].state, 'succeeded', `round ${round}: the streamed upload's import ends well (${uploadImports[0].error})`)
    assert.equal(await countKeys(uploadKeys), uploadLoaded ? UPLOAD_ROWS : 0, `round ${round}: the streamed upload's rows are there exactly when its import succeeded`)

    await checkExports(storageDir, round)
    await checkUploads(storageDir, round, checkedUploads)
    const swept = await waitFor(`round ${round}: the sweep to clear tmp/ and every unreferenced file`, async () => {
      const stray = await strayFiles(storageDir)
      return stray.length === 0 && Date.now()
    }, 20_000)

    tally(`import ${atKill[0]!.split(' ')[0]}`)
    tally(`export ${atKill[1]!.split(' ')[0]}`)
    tally(`upload ${upload.taskId ? 'answered' : upload.stored ? 'stored' : 'cut'}`)
    if (upload.taskId) tally(`upload's import ${atKill[2]!.split(' ')[0]}`)
    const uploadAtKill = upload.taskId ? `answered, its import ${atKill[2]}` : upload.stored ? 'stored, unanswered' : `cut after ${(upload.sent / 2 ** 20).toFixed(1)} MB`
    t.diagnostic(`round ${round}: kill at +${delayMs} ms (${mode}); at the kill import ${atKill[0]}, export ${atKill[1]}, upload ${uploadAtKill}; `
      + `left ${leftovers.temp} temp and ${leftovers.orphans} unreferenced file(s); import attempts ${importTask!.attempts}, upload import ${uploadImports[0]?.state ?? 'none'}; `
      + `settled ${settled - gateway.startedAt} ms after the restart, swept ${swept - settled} ms later`)
  }

  t.diagnostic(`the kills found: ${[...landed].sort().map(([what, n]) => `${what} ${n}×`).join(', ')}`)
  gateway.kill('SIGTERM')
  assert.deepEqual(await gateway.waitForExit(20_000), { code: 0, signal: null }, gateway.output().stderr)
  assert.doesNotMatch(gateway.output().stderr, /unhandled|uncaught|^\s+at /im)
})

/** Every export is whole: its file's size, sha256 and rows are what the task says, or it failed with no file. */
async function checkExports(storageDir: string, round: number) {
  const exports = await db.sql<{ id: string; state: string; error: string | null; key: string | null; size: number | null; sha: string | null; rows: number }[]>`
    select id, state, error, result_key as key, result_size::int as size, result_sha256 as sha, progress_rows::int as rows
    from sluice.tasks where kind = 'export'`
  for (const task of exports) {
    if (task.state === 'failed') {
      assert.equal(task.key, null, `round ${round}: a failed export has no file`)
      continue
    }
    assert.equal(task.state, 'succeeded', `round ${round}: export ${task.id} ended ${task.state} (${task.error})`)
    const bytes = await readFile(path.join(storageDir, task.key!))
    assert.equal(bytes.length, task.size, `round ${round}: export ${task.id}'s file has the recorded size`)
    assert.equal(sha256(bytes), task.sha, `round ${round}: export ${task.id}'s file has the recorded sha256`)
    const lines = bytes.toString('utf8').trimEnd().split('\n')
    assert.equal(lines.length, EXPORT_ROWS + 1, `round ${round}: export ${task.id} has the header and every row`)
    assert.equal(task.rows, EXPORT_ROWS)
    assert.equal(lines.at(-1), `${EXPORT_ROWS},${'y'.repeat(100)}`)
  }
}

/** No upload row points at a missing or different file. */
async function checkUploads(storageDir: string, round: number, checked: Set<string>) {
  const uploads = await db.sql<{ id: string; key: string; size: number; sha: string }[]>`select id, storage_key as key, size::int as size, sha256 as sha from sluice.uploads`
  for (const upload of uploads) {
    if (checked.has(upload.id)) continue
    const bytes = await readFile(path.join(storageDir, upload.key)).catch(() => null)
    assert.ok(bytes, `round ${round}: upload ${upload.id} points at a file that exists (${upload.key})`)
    assert.equal(bytes.length, upload.size, `round ${round}: upload ${upload.id}'s file has the recorded size`)
    assert.equal(sha256(bytes), upload.sha, `round ${round}: upload ${upload.id}'s file has the recorded sha256`)
    checked.add(upload.id)
  }
}

/**
 * With the gateway dead, ages what it left behind past the sweep's thresholds: every
 * temp file (which must have a name the gateway makes) and every stored file no row
 * refers to. Referenced files keep their times.
 */
async function ageLeftovers(storageDir: string) {
  const temp = await readdir(path.join(storageDir, 'tmp'))
  for (const name of temp) assert.match(name, /^[0-9a-f-]{36}\.part$/, 'only temp files the gateway names')
  const old = (ms: number) => new Date(Date.now() - ms)
  for (const name of temp) await utimes(path.join(storageDir, 'tmp', name), old(STALE_TEMP_AGE_MS), old(STALE_TEMP_AGE_MS))
  const orphans = await unreferenced(storageDir)
  for (const key of orphans) await utimes(path.join(storageDir, key), old(ORPHAN_AGE_MS), old(ORPHAN_AGE_MS))
  return { temp: temp.length, orphans: orphans.length }
}

/** Files the sweep has yet to remove: anything under tmp/, and stored files no task or upload refers to. */
async function strayFiles(storageDir: string): Promise<string[]> {
  const temp = (await readdir(path.join(storageDir, 'tmp'))).map((name) => `tmp/${name}`)
  return [...temp, ...await unreferenced(storageDir)]
}

async function unreferenced(storageDir: string): Promise<string[]> {
  const keys: string[] = []
  for (const area of AREAS) {
    const entries = await readdir(path.join(storageDir, area), { recursive: true, withFileTypes: true }).catch(() => [])
    for (const e of entries) if (e.isFile()) keys.push(path.relative(storageDir, path.join(e.parentPath, e.name)))
  }
  if (keys.length === 0) return []
  const rows = await db.sql<{ key: string }[]>`
    select key from unnest(${db.sql.array(keys)}::text[]) as k(key)
    where not exists (select from sluice.tasks where result_key = k.key)
      and not exists (select from sluice.uploads where storage_key = k.key)`
  return rows.map((r) => r.key)
}

/** Each task's state (null: no task), with its progress while running. */
async function taskStates(ids: (string | null)[]): Promise<string[]> {
  const rows = await db.sql<{ id: string; state: string; rows: number; bytes: number }[]>`
    select id, state, progress_rows::int as rows, progress_bytes::int as bytes from sluice.tasks where id = any(${ids.filter((id) => id !== null)}::uuid[])`
  return ids.map((id) => {
    const row = rows.find((r) => r.id === id)
    if (!row) return 'none'
    return row.state === 'running' ? `running (${row.rows} rows, ${(row.bytes / 2 ** 20).toFixed(1)} MB)` : row.state
  })
}

async function countKeys(low: number): Promise<number> {
  const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from crash_rows where id > ${low} and id <= ${low + UPLOAD_KEY_OFFSET}`
  return row!.n
}

const isAllOrNothing = (count: number, rows: number) => count === 0 || count === rows

async function requestTask(gateway: ChildGateway, pathname: string, init: RequestInit): Promise<string> {
  const res = await gateway.fetch(pathname, init)
  const body = (await res.json()) as TaskJson
  assert.equal(res.status, 202, JSON.stringify(body))
  return body.id
}

type StreamedUpload = { taskId: string | null; stored: boolean; sent: number }

/**
 * Sends `file` as an import's body, `chunk` bytes every `paceMs`. Settles when the
 * gateway answers or dies: `taskId` only if it answered 202.
 */
function streamUpload(gateway: ChildGateway, file: Buffer, chunk: number, paceMs: number): Promise<StreamedUpload> {
  let sent = 0
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent >= file.length) return controller.close()
      if (sent > 0) await sleep(paceMs)
      const next = file.subarray(sent, sent + chunk)
      sent += next.length
      controller.enqueue(next)
    },
  })
  const init = { method: 'POST', body, duplex: 'half', headers: { 'Content-Type': 'text/csv' } } as RequestInit
  return gateway.fetch('/api/datasets/crash_rows/imports', init).then(
    async (res) => {
      const answer = (await res.json()) as TaskJson
      assert.equal(res.status, 202, JSON.stringify(answer))
      return { taskId: answer.id, stored: true, sent }
    },
    async () => ({ taskId: null, stored: (await db.sql`select 1 from sluice.uploads where sha256 = ${sha256(file)}`).length > 0, sent }),
  )
}

/** Rows `low + 1 … low + count` of round `round`, with a header. */
function csv(round: number, low: number, count: number): Buffer {
  const lines = ['id,round,note']
  for (let i = 1; i <= count; i++) lines.push(`${low + i},${round},row ${i} of round ${round}: some text to fill a line`)
  return Buffer.from(`${lines.join('\n')}\n`)
}

/** A child gateway on the test database with a short lease and a sweep every second; killed at the end if still up. */
async function childGateway(storageDir: string) {
  const startedAt = Date.now()
  const child = await startChildGateway({ databaseUrl: db.url, storageDir, env: { TASK_LEASE_SECONDS: String(LEASE_SECONDS), RETENTION_SWEEP_SECONDS: '1' } })
  cleanups.push(async () => {
    child.kill('SIGKILL')
    await child.waitForExit(5_000)
  })
  return Object.assign(child, { startedAt })
}

function chooseSeed(): number {
  const given = process.env.CRASH_SEED
  if (given !== undefined && given !== '') {
    assert.match(given, /^\d+$/, 'CRASH_SEED must be a whole number')
    return Number(given)
  }
  return process.env.CI === 'true' ? DEFAULT_CI_SEED : randomInt(2 ** 31)
}

/** A small seeded generator (mulberry32): the same seed, the same instants. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex')
