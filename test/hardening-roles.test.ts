// A token's PostgreSQL role holds for everything PostgreSQL runs for its import, until the
// commit (issue 11, item 6), and a dry run says no more about rows the role cannot see than
// the import itself would (item 7).
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, test } from 'node:test'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { startTestGateway, waitForTask, type TaskJson, type TestGateway } from './support/gateway.ts'

let db: TestDatabase
let gateway: TestGateway
let clerkToken: string
const clerkRole = `sluice_clerk_${randomBytes(4).toString('hex')}`

type Task = TaskJson & { details: { inserted?: number; failed?: number; errors?: { line: number; message: string }[] } }

before(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create role ${clerkRole} nologin;
    grant usage on schema public to ${clerkRole};
    create table ledger (id int primary key, amount int not null);
    create table ledger_audit (id int, recorded_by text not null);
    grant select, insert on ledger to ${clerkRole};
    grant insert on ledger_audit to ${clerkRole};
    create function audit_ledger() returns trigger language plpgsql as $$
    begin
      insert into ledger_audit values (new.id, current_user);
      return null;
    end $$;
    -- Deferred: it runs when the transaction's constraints are checked, at the commit at the latest.
    create constraint trigger ledger_audited after insert on ledger deferrable initially deferred
      for each row execute function audit_ledger();

    create table secrets (id int primary key, owner text not null, note text);
    insert into secrets values (1, 'other', 'hidden note'), (2, 'clerk', 'visible note');
    alter table secrets enable row level security;
    grant select, insert on secrets to ${clerkRole};
    create policy own_rows on secrets for select to ${clerkRole} using (owner = 'clerk');
    create policy may_insert on secrets for insert to ${clerkRole} with check (true);
  `)
  gateway = await startTestGateway(db.url)
  const res = await gateway.fetch('/api/tokens', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'clerk', role: 'user', dbRole: clerkRole }) })
  assert.equal(res.status, 201)
  clerkToken = ((await res.json()) as { token: string }).token
})

after(async () => {
  await gateway?.stop()
  await db?.drop()
  const admin = (await import('postgres')).default(process.env.SLUICE_TEST_ADMIN_URL!, { max: 1, onnotice: () => {} })
  await admin.unsafe(`drop role if exists ${clerkRole}`).catch(() => {})
  await admin.end()
})

async function importAsClerk(dataset: string, csv: string, query = ''): Promise<Task> {
  const res = await gateway.fetch(`/api/datasets/${dataset}/imports${query}`, {
    method: 'POST', body: csv, headers: { 'Content-Type': 'text/csv', Authorization: `Bearer ${clerkToken}` },
  })
  const task = (await res.json()) as Task
  assert.equal(res.status, 202, JSON.stringify(task))
  return (await waitForTask(gateway, task.id)) as Task
}

// Both paths: a clean file goes straight to COPY; one with a bad row is staged and merged.
for (const [path, csv, query, expected] of [
  ['direct', 'id,amount\n1,10\n2,20\n', '', [1, 2]],
  ['staged', 'id,amount\n3,30\n4,x\n5,50\n', '?onError=skip', [3, 5]],
] as const) {
  test(`deferred triggers of an import (${path} path) run as the token's role, not the gateway's user`, async () => {
    const task = await importAsClerk('ledger', csv, query)
    assert.equal(task.state, 'succeeded', task.error ?? '')
    const audit = await db.sql`select id, recorded_by from ledger_audit where id = any(${expected as unknown as number[]}) order by id`
    assert.deepEqual(audit.map((r) => [r.id, r.recorded_by]), expected.map((id) => [id, clerkRole]))
  })
}

test('a dry run runs the deferred checks too, as the role, and keeps nothing', async () => {
  await db.sql.unsafe(`
    create or replace function audit_ledger() returns trigger language plpgsql as $$
    begin
      if new.amount < 0 then raise exception 'negative amounts need approval'; end if;
      insert into ledger_audit values (new.id, current_user);
      return null;
    end $$`)
  const dry = await importAsClerk('ledger', 'id,amount\n7,-1\n', '?dryRun=true')
  assert.equal(dry.state, 'failed', 'the commit would fail on the deferred check, so the dry run must not say it passes')
  assert.match(dry.error ?? '', /negative amounts need approval/)
  const fine = await importAsClerk('ledger', 'id,amount\n8,80\n', '?dryRun=true')
  assert.equal(fine.state, 'succeeded', fine.error ?? '')
  assert.deepEqual([...await db.sql`select count(*)::int as n from ledger where id in (7, 8)`], [{ n: 0 }])
  assert.deepEqual([...await db.sql`select count(*)::int as n from ledger_audit where id in (7, 8)`], [{ n: 0 }])
})

test('a row hidden by row-level security: a dry run says what the import says, and shows nothing of the row', async (t) => {
  const csv = 'id,owner,note\n1,clerk,mine now\n'
  const dry = await importAsClerk('secrets', csv, '?dryRun=true')
  const real = await importAsClerk('secrets', csv)
  // PostgreSQL checks a unique key against every row, visible or not: both say the key is taken.
  assert.equal(dry.state, real.state)
  assert.equal(real.state, 'failed')
  assert.equal(dry.error, real.error)
  t.diagnostic(`both say: ${real.error}`)
  // With row-level security on, PostgreSQL leaves out even the key from its detail.
  assert.match(real.error ?? '', /^A key in the file already exists in a row you may not see \(row-level security hides it; PostgreSQL checks keys against every row\), constraint secrets_pkey\. Nothing was imported\.$/)
  assert.doesNotMatch(`${real.error} ${JSON.stringify(real.details)}`, /hidden note|other/)
  assert.deepEqual([...await db.sql`select owner, note from secrets where id = 1`], [{ owner: 'other', note: 'hidden note' }])
})
