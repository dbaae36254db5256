// Faults on the data path, caused for real: a full disk under uploads and exports,
// connections killed and serialization failures in the middle of a task, bad data,
// and a task that keeps failing until an operator retries it.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtemp, readdir, rm, rmdir, statfs, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import { gzipSync } from 'node:zlib'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { isFinished, signInWithForm, startTestGateway, waitForTask, type TaskJson, type TestGateway } from './support/gateway.ts'
import { skipUnlessRoot } from './support/requirements.ts'
import { waitFor } from './support/wait.ts'

type Task = TaskJson & { lastError: string | null; maxAttempts: number; startedAt: string | null; details: Record<string, unknown> }

let db: TestDatabase

before(async () => {
  db = await createTestDatabase()
})

after(async () => {
  await db?.drop()
})

/** Every file under `root`, as paths relative to it (directories themselves are not listed). */
async function filesUnder(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true })
  return entries.filter((e) => !e.isDirectory()).map((e) => path.relative(root, path.join(e.parentPath, e.name))).sort()
}

/** The stored files an upload or export could leave: temp files, uploads, exports. */
async function dataFilesUnder(root: string): Promise<string[]> {
  return (await filesUnder(root)).filter((f) => /^(tmp|uploads|exports|reports)\//.test(f))
}

function csvOf(rows: number, line: (i: number) => string, header: string): Buffer {
  const lines = [header]
  for (let i = 1; i <= rows; i++) lines.push(line(i))
  return Buffer.from(lines.join('\n') + '\n')
}

async function postImport(gateway: TestGateway, table: string, body: Buffer): Promise<Response> {
  return gateway.fetch(`/api/datasets/${table}/imports`, { method: 'POST', body, headers: { 'Content-Type': 'text/csv' } })
}

async function startImport(gateway: TestGateway, table: string, body: Buffer): Promise<string> {
  const res = await postImport(gateway, table, body)
  const json = (await res.json()) as Task
  assert.equal(res.status, 202, JSON.stringify(json))
  return json.id
}

async function startExport(gateway: TestGateway, dataset: string, query = ''): Promise<string> {
  const res = await gateway.fetch(`/api/datasets/${dataset}/exports${query ? `?${query}` : ''}`, { method: 'POST' })
  const json = (await res.json()) as Task
  assert.equal(res.status, 202, JSON.stringify(json))
  return json.id
}


const finished = async (gateway: TestGateway, id: string, timeoutMs = 30_000) => (await waitForTask(gateway, id, undefined, timeoutMs)) as Task

describe('a full disk', { skip: skipUnlessRoot() }, () => {
  const SPACE = 8 * 1024 * 1024
  let mountPoint = ''
  let mounted = false
  let gateway: TestGateway

  before(async () => {
    const uid = process.getuid?.()
    assert.equal(uid, 0, `These tests mount a ${SPACE / 1024 / 1024} MiB tmpfs as the gateway's STORAGE_DIR to fill its disk for real, `
      + `which needs root (this process runs as uid ${uid}). Run them as root: sudo npm test -- test/faults-data.test.ts `
      + '(or in a container with CAP_SYS_ADMIN).')
    mountPoint = await mkdtemp(path.join(os.tmpdir(), 'sluice-full-disk-'))
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${SPACE}`, 'tmpfs', mountPoint], { stdio: 'pipe' })
      mounted = true
    } catch (err) {
      assert.fail(`Could not mount a tmpfs at ${mountPoint} (${String((err as { stderr?: Buffer }).stderr ?? err).trim()}). `
        + 'These tests need root with permission to mount (a container needs CAP_SYS_ADMIN, e.g. docker run --cap-add SYS_ADMIN).')
    }
    await db.sql.unsafe(`
      create table notes (id int primary key, body text);
      -- about 27 MB as CSV: more than three times the disk
      create table wide_rows as select g as id, repeat(md5(g::text), 4) as body from generate_series(1, 200000) g;
      alter table wide_rows add primary key (id);
    `)
    gateway = await startTestGateway(db.url, { STORAGE_DIR: mountPoint })
  })

  after(async () => {
    await gateway?.stop()
    if (mounted) execFileSync('umount', [mountPoint])
    if (mountPoint) await rmdir(mountPoint)
  })

  const freeBytes = async () => {
    const fs = await statfs(mountPoint)
    return fs.bavail * fs.bsize
  }

  test('an upload bigger than the free space is refused with 507 DISK_FULL (raw, multipart, gzip); nothing is left behind and the next upload works', async () => {
    const big = csvOf(150_000, (i) => `${i},${'n'.repeat(80)}`, 'id,body') // about 13 MB
    assert.ok(big.length > SPACE * 1.5, `the upload (${big.length} bytes) is well over the disk's ${SPACE} bytes`)
    const multipart = new FormData()
    multipart.append('file', new Blob([big], { type: 'text/csv' }), 'big.csv')
    const ways: [string, RequestInit][] = [
      ['raw body', { body: big, headers: { 'Content-Type': 'text/csv' } }],
      ['multipart form', { body: multipart }],
      // 13 MB that travel as a few hundred KB: the disk fills while inflating
      ['Content-Encoding: gzip', { body: gzipSync(big), headers: { 'Content-Type': 'text/csv', 'Content-Encoding': 'gzip' } }],
    ]
    const freeBefore = await freeBytes()
    for (const [way, init] of ways) {
      const res = await gateway.fetch('/api/datasets/notes/imports', { method: 'POST', ...init })
      const body = (await res.json()) as { code: string; error: string }
      assert.equal(res.status, 507, `${way}: ${JSON.stringify(body)}`)
      assert.equal(body.code, 'DISK_FULL', way)
      assert.match(body.error, /no room/i, way)
      assert.deepEqual(await dataFilesUnder(mountPoint), [], `${way}: no temp file and no upload is left in storage`)
      assert.ok(await freeBytes() >= freeBefore - 64 * 1024, `${way}: the space the partial file took is free again`)
    }
    const [counts] = await db.sql`select (select count(*)::int from sluice.uploads) as uploads, (select count(*)::int from sluice.tasks) as tasks`
    assert.deepEqual({ ...counts }, { uploads: 0, tasks: 0 }, 'no upload row and no task were recorded')

    assert.equal((await gateway.fetchAnonymously('/healthz')).status, 200)
    const small = await finished(gateway, await startImport(gateway, 'notes', csvOf(1000, (i) => `${i},note ${i}`, 'id,body')))
    assert.equal(small.state, 'succeeded', small.error ?? '')
    const [loaded] = await db.sql`select count(*)::int as n from notes`
    assert.equal(loaded!.n, 1000)
    assert.equal((await dataFilesUnder(mountPoint)).filter((f) => f.startsWith('uploads/')).length, 1, 'the small upload is stored')
  })

  test('an export bigger than the free space fails once with DISK_FULL, leaves no partial file, and the gateway keeps serving', async () => {
    const before = new Set(await dataFilesUnder(mountPoint))
    const freeBefore = await freeBytes()
    const task = await finished(gateway, await startExport(gateway, 'wide_rows'))
    assert.equal(task.state, 'failed')
    assert.equal(task.errorCode, 'DISK_FULL')
    assert.match(task.error!, /disk .* is full/i)
    assert.equal(task.attempts, 1, 'a full disk is not retried')

    const left = (await dataFilesUnder(mountPoint)).filter((f) => !before.has(f))
    assert.deepEqual(left, [], 'no temp file and no export is left in storage')
    assert.ok(await freeBytes() >= freeBefore - 64 * 1024, 'the space the partial file took is free again')

    assert.equal((await gateway.fetchAnonymously('/healthz')).status, 200)
    const small = await finished(gateway, await startExport(gateway, 'wide_rows', 'limit=10&order=id'))
    assert.equal(small.state, 'succeeded', small.error ?? '')
    const csv = await (await gateway.fetch(`/api/tasks/${small.id}/download`)).text()
    assert.equal(csv.trimEnd().split('\n').length, 11)
  })

  test('an import whose error report does not fit fails once with DISK_FULL, loads nothing and leaves no report', async () => {
    await db.sql`create table counted (id int primary key, body text)`
    const bad = csvOf(40_000, (i) => `x${i},row ${i}`, 'id,body') // every id is not a number: the report is bigger than the file
    // Leave room for the upload but not for its error report.
    const filler = path.join(mountPoint, 'filler.bin')
    const room = bad.length + 512 * 1024
    await writeFile(filler, Buffer.alloc(Math.max(0, (await freeBytes()) - room)))
    try {
      const before = new Set(await dataFilesUnder(mountPoint))
      const task = await finished(gateway, await startImport(gateway, 'counted', bad))
      assert.equal(task.state, 'failed')
      assert.equal(task.errorCode, 'DISK_FULL', task.error ?? '')
      assert.match(task.error!, /disk .* is full/i)
      assert.equal(task.attempts, 1)
      const [rows] = await db.sql`select count(*)::int as n from counted`
      assert.equal(rows!.n, 0)
      const added = (await dataFilesUnder(mountPoint)).filter((f) => !before.has(f))
      assert.deepEqual(added.filter((f) => !f.startsWith('uploads/')), [], 'no temp file and no report is left')
      assert.equal((await gateway.fetchAnonymously('/healthz')).status, 200)
    } finally {
      await rm(filler, { force: true })
    }
  })
})

describe('tasks that fail on the way (TASK_MAX_ATTEMPTS=2)', () => {
  let gateway: TestGateway

  before(async () => {
    await db.sql.unsafe(`
      -- about 3 s to export: time to find its connection and kill it in the middle
      create view slow_lines as select g as n, repeat('x', 100) || pg_sleep(0.0015)::text as filler from generate_series(1, 2000) g;

      -- Fails the first insert it sees with the SQLSTATE it is given, then lets every row through.
      -- The import's transaction rolls back, so the "already failed" flag is a sequence: nextval is never rolled back.
      -- The message carries the moment of the failure (epoch ms), to measure the backoff against.
      create function fail_first_insert() returns trigger language plpgsql as $$
      begin
        if nextval(tg_argv[0]::regclass) = 1 then
          raise exception 'simulated % at %', tg_argv[2], (extract(epoch from clock_timestamp()) * 1000)::bigint using errcode = tg_argv[1];
        end if;
        return new;
      end $$;
      create table ledger_a (id int primary key, amount int);
      create sequence ledger_a_faults;
      create trigger fault before insert on ledger_a for each row execute function fail_first_insert('ledger_a_faults', '40001', 'serialization failure');
      create table ledger_b (id int primary key, amount int);
      create sequence ledger_b_faults;
      create trigger fault before insert on ledger_b for each row execute function fail_first_insert('ledger_b_faults', '40P01', 'deadlock');
    `)
    gateway = await startTestGateway(db.url, { TASK_MAX_ATTEMPTS: '2' })
  })

  after(async () => {
    await gateway?.stop()
  })

  test('an export whose database connection is killed mid-stream is retried after the backoff and succeeds with a correct file', async (t) => {
    const id = await startExport(gateway, 'slow_lines')
    const killed = await waitFor('the export to be streaming', async () => {
      const [row] = await db.sql`
        select pg_terminate_backend(a.pid) as terminated, clock_timestamp()::text as at, t.progress_rows::int as rows
        from pg_stat_activity a join sluice.tasks t on t.id = ${id}
        where a.datname = current_database() and a.application_name = ${`sluice task ${id}`}
          and a.query ilike 'copy (%' and a.state = 'active' and t.progress_rows > 0`
      return row
    })
    assert.equal(killed.terminated, true)
    assert.ok(killed.rows < 2000, `killed in the middle (after ${killed.rows} rows)`)

    const waiting = (await waitForTask(gateway, id, (t) => t.state === 'queued' || isFinished(t))) as Task
    assert.equal(waiting.state, 'queued', `requeued after the kill: ${JSON.stringify(waiting)}`)
    assert.equal(waiting.attempts, 1)
    assert.match(waiting.lastError!, /connection to the database was lost|terminating connection/i, 'a readable reason is kept while it waits')

    const done = await finished(gateway, id)
    assert.equal(done.state, 'succeeded', done.error ?? '')
    assert.equal(done.attempts, 2)
    const csv = await (await gateway.fetch(`/api/tasks/${id}/download`)).text()
    const expected = ['n,filler', ...Array.from({ length: 2000 }, (_, i) => `${i + 1},${'x'.repeat(100)}`)].join('\n') + '\n'
    assert.equal(csv, expected, 'the retried export is whole and exact')

    // run_after is when the retry was due (the failure + 2^1 s); the dispatcher claims it at its next poll (every 2 s).
    const [gap] = await db.sql`
      select extract(epoch from run_after - ${killed.at}::timestamptz)::float8 as due, extract(epoch from started_at - ${killed.at}::timestamptz)::float8 as seconds
      from sluice.tasks where id = ${id}`
    assert.ok(gap!.due >= 2 && gap!.due < 3, `the retry was due 2 s after the failure (${gap!.due.toFixed(2)} s after the kill)`)
    assert.ok(gap!.seconds >= 2, `the second attempt waited the 2 s backoff after the kill (it started ${gap!.seconds.toFixed(2)} s after)`)
    assert.ok(gap!.seconds < 10, `and not much longer (${gap!.seconds.toFixed(2)} s)`)
    t.diagnostic(`killed after ${killed.rows} rows; error kept: ${waiting.lastError}; retry due ${gap!.due.toFixed(2)} s and started ${gap!.seconds.toFixed(2)} s after the kill`)
  })

  for (const [table, sqlstate, name] of [['ledger_a', '40001', 'serialization failure'], ['ledger_b', '40P01', 'deadlock']] as const) {
    test(`an import hit by a ${name} (${sqlstate}) is retried after the backoff, loads every row once`, async (t) => {
      const rows = 5000
      const id = await startImport(gateway, table, csvOf(rows, (i) => `${i},${i % 97}`, 'id,amount'))
      const waiting = (await waitForTask(gateway, id, (t) => t.state === 'queued' && t.attempts === 1 || isFinished(t))) as Task
      assert.equal(waiting.state, 'queued', `requeued after the ${name}: ${JSON.stringify(waiting)}`)
      const failedAt = Number(new RegExp(`simulated ${name} at (\\d+)`).exec(waiting.lastError ?? '')?.[1])
      assert.ok(failedAt > 0, `the first attempt's error is kept while it waits: ${waiting.lastError}`)

      const done = await finished(gateway, id)
      assert.equal(done.state, 'succeeded', done.error ?? '')
      assert.equal(done.attempts, 2)
      const [loaded] = await db.sql.unsafe(`select count(*)::int as n, count(distinct id)::int as ids, sum(amount)::int as total from ${table}`)
      const total = Array.from({ length: rows }, (_, i) => (i + 1) % 97).reduce((a, b) => a + b, 0)
      assert.deepEqual({ ...loaded }, { n: rows, ids: rows, total })
      const [row] = await db.sql`select extract(epoch from run_after)::float8 * 1000 as due from sluice.tasks where id = ${id}`
      const due = (row!.due - failedAt) / 1000
      assert.ok(due >= 2 && due < 3, `the retry was due 2 s after the failure (${due.toFixed(2)} s)`)
      const waited = (new Date(done.startedAt!).getTime() - failedAt) / 1000
      assert.ok(waited >= 2, `the second attempt started ${waited.toFixed(2)} s after the first failed: at least the 2 s backoff`)
      assert.ok(waited < 10, `and not much later (${waited.toFixed(2)} s)`)
      t.diagnostic(`error kept: ${waiting.lastError}; retry due ${due.toFixed(2)} s and started ${waited.toFixed(2)} s after the first failed`)
    })
  }

  describe('bad data is never retried', () => {
    before(async () => {
      await db.sql.unsafe(`
        create table tally (id int primary key, amount int not null);
        insert into tally values (1, 10);
        -- a rule only a trigger knows: the validator cannot see it, so it fails the load itself
        create function refuse_negative() returns trigger language plpgsql as $$
        begin
          if new.amount < 0 then raise exception 'amount % is negative', new.amount using errcode = 'check_violation'; end if;
          return new;
        end $$;
        create table guarded (id int primary key, amount int);
        create trigger refuse before insert on guarded for each row execute function refuse_negative();
        create table divisors (id int primary key, divisor int);
        insert into divisors select g, g - 50 from generate_series(1, 100) g;
        create view ratios as select id, 1000 / divisor as ratio from divisors;
        create table raw_codes (id int primary key, code text);
        insert into raw_codes select g, case when g = 77 then 'x77' else g::text end from generate_series(1, 100) g;
        create view codes as select id, code::int as code_number from raw_codes;
      `)
    })

    const imports: [string, string, string, RegExp][] = [
      ['a value of the wrong type', 'tally', 'id,amount\n2,20\n3,abc\n4,40\n', /line 3.*amount/i],
      ['a key that already exists', 'tally', 'id,amount\n5,50\n1,11\n', /line 3/i],
      ['a key twice in the file', 'tally', 'id,amount\n6,60\n6,61\n', /line/i],
    ]
    for (const [what, table, csv, message] of imports) {
      test(`an import with ${what} fails at once: attempts 1, nothing loaded`, async () => {
        const task = await finished(gateway, await startImport(gateway, table, Buffer.from(csv)))
        assert.equal(task.state, 'failed')
        assert.equal(task.errorCode, 'ROWS_INVALID')
        assert.match(task.error!, message)
        assert.equal(task.attempts, 1)
        const [rows] = await db.sql`select count(*)::int as n from tally`
        assert.equal(rows!.n, 1, 'only the row that was there before')
      })
    }

    test('an import a trigger refuses (check_violation) fails at once with the database\'s message, attempts 1', async () => {
      const task = await finished(gateway, await startImport(gateway, 'guarded', Buffer.from('id,amount\n1,5\n2,-3\n3,7\n')))
      assert.equal(task.state, 'failed')
      assert.equal(task.errorCode, 'CHECK_FAILED')
      assert.equal((task as Task & { sqlState: string | null }).sqlState, '23514')
      assert.match(task.error!, /amount -3 is negative/)
      assert.equal(task.attempts, 1)
      const [rows] = await db.sql`select count(*)::int as n from guarded`
      assert.equal(rows!.n, 0)
    })

    const exports: [string, string, string, string, RegExp][] = [
      ['a division by zero', 'ratios', 'ratio=gt.-10000', 'DIVISION_BY_ZERO:22012', /division by zero/],
      ['a cast that fails on one row', 'codes', 'code_number=gte.1', 'BAD_VALUE:22P02', /invalid input syntax for type integer: "x77"/],
    ]
    for (const [what, dataset, filter, code, message] of exports) {
      test(`an export whose filter meets ${what} at run time fails at once: attempts 1`, async () => {
        const res = await gateway.fetch(`/api/datasets/${dataset}/exports?${filter}`, { method: 'POST' })
        assert.equal(res.status, 202, 'planning does not see the error: the task is queued')
        const task = await finished(gateway, ((await res.json()) as Task).id)
        assert.equal(task.state, 'failed')
        assert.equal(`${task.errorCode}:${(task as Task & { sqlState: string | null }).sqlState}`, code)
        assert.match(task.error!, message)
        assert.equal(task.attempts, 1)
        assert.equal(task.download, null)
      })
    }
  })

  describe('dead letters', () => {
    before(async () => {
      await db.sql.unsafe(`
        create function always_conflict() returns trigger language plpgsql as $$
        begin
          raise exception 'could not serialize access due to concurrent update (simulated)' using errcode = 'serialization_failure';
        end $$;
        create table journal (id int primary key, note text);
      `)
    })

    const conflictAlways = () => db.sql`create trigger conflict before insert on journal for each row execute function always_conflict()`
    const stopConflicts = () => db.sql`drop trigger conflict on journal`
    /** Rows of journal with ids from..from+99: one import's worth. */
    const journalRows = async (from: number) => (await db.sql`select count(*)::int as n from journal where id between ${from + 1} and ${from + 100}`)[0]!.n as number

    /** An import into journal that fails for good: both attempts meet a serialization failure. */
    async function deadImport(firstId: number): Promise<Task> {
      await conflictAlways()
      const id = await startImport(gateway, 'journal', csvOf(100, (i) => `${firstId + i},note ${firstId + i}`, 'id,note'))
      const task = await finished(gateway, id)
      await stopConflicts()
      return task
    }

    test('a task that keeps failing for a transient reason ends failed with its attempts and last error; a retry from the API runs it again', async () => {
      const dead = await deadImport(0)
      assert.equal(dead.state, 'failed')
      assert.equal(dead.attempts, 2)
      assert.equal(dead.maxAttempts, 2)
      assert.equal(dead.errorCode, 'TRANSIENT')
      assert.match(dead.error!, /could not serialize access/)
      assert.equal(await journalRows(0), 0)
      const page = await (await gateway.fetch(`/tasks/${dead.id}`)).text()
      assert.match(page, /could not serialize access/, 'the page shows the last error')
      assert.match(page, /2 attempts/)
      assert.match(page, /id="retry-form"/, 'and offers to run it again')

      const res = await gateway.fetch(`/api/tasks/${dead.id}/retry`, { method: 'POST' })
      const queued = (await res.json()) as Task
      assert.equal(res.status, 202, JSON.stringify(queued))
      assert.equal(queued.state, 'queued')
      assert.equal(queued.attempts, 0, 'a retried dead letter gets fresh attempts')
      const done = await finished(gateway, dead.id)
      assert.equal(done.state, 'succeeded', done.error ?? '')
      assert.equal(done.attempts, 1)
      const previous = done.details.previousRun as { state: string; errorCode: string; error: string; attempts: number }
      assert.equal(previous.state, 'failed')
      assert.equal(previous.errorCode, 'TRANSIENT')
      assert.match(previous.error, /could not serialize access/, 'what ended the previous run is kept')
      assert.equal(previous.attempts, 2)
      assert.equal(await journalRows(0), 100)
      assert.equal((await gateway.fetch(`/api/tasks/${dead.id}/retry`, { method: 'POST' })).status, 409, 'a succeeded task is not retried')
    })

    test('the page\'s retry form works: with a session it needs the CSRF token, with a Bearer token it does not', async () => {
      const dead = await deadImport(100)
      assert.equal(dead.state, 'failed')
      assert.equal(dead.attempts, 2)
      const { cookie, csrf } = await signInWithForm(gateway)
      const form = (fields: Record<string, string>, headers: Record<string, string>, id = dead.id) => gateway.fetchAnonymously(`/tasks/${id}/retry`, {
        method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(fields),
      })
      assert.equal((await form({}, { Cookie: cookie })).status, 403, 'a session without the CSRF token is refused')
      assert.equal((await form({ _csrf: 'guess' }, { Cookie: cookie })).status, 403, 'and with a wrong one')
      assert.equal((await finished(gateway, dead.id)).state, 'failed', 'the refused posts changed nothing')

      const retried = await form({ _csrf: csrf }, { Cookie: cookie })
      assert.equal(retried.status, 303)
      assert.equal(retried.headers.get('Location'), `/tasks/${dead.id}`)
      const done = await finished(gateway, dead.id)
      assert.equal(done.state, 'succeeded', done.error ?? '')
      assert.match((done.details.previousRun as { error: string }).error, /could not serialize access/)
      assert.equal(await journalRows(100), 100)

      const again = await deadImport(200)
      assert.equal(again.state, 'failed')
      const withToken = await form({}, { Authorization: `Bearer ${gateway.adminToken}` }, again.id)
      assert.equal(withToken.status, 303, 'a Bearer token needs no CSRF token: no browser sends it on its own')
      assert.equal((await finished(gateway, again.id)).state, 'succeeded')
      assert.equal(await journalRows(200), 100)
    })
  })
})

