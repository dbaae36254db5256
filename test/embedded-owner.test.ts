// The embedded default gives the gateway an owner role that is no superuser (issue 11, item
// 8): a token without a PostgreSQL role acts as that owner, which cannot read pg_authid, run
// COPY … PROGRAM or read the server's files. A cluster made before this role existed is
// handed over on the next start.
import assert from 'node:assert/strict'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import postgres from 'postgres'
import { parseConfig } from '../src/config.ts'
import { startEmbeddedPostgres } from '../src/db/embedded.ts'
import { startGateway } from '../src/gateway.ts'

let scratch: string

before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'sluice-embedded-owner-'))
  await chmod(scratch, 0o755) // as root, the server runs as "postgres", which must pass through to its data
})

after(async () => {
  await rm(scratch, { recursive: true, force: true })
})

const refusal = (sql: postgres.Sql, query: string) => sql.unsafe(query).then(() => 'allowed', (err: { code?: string }) => err.code)

test('the gateway on the embedded default runs as an owner that is not a superuser', { timeout: 120_000 }, async () => {
  const storageDir = path.join(scratch, 'fresh')
  const { config, problems } = parseConfig({ PORT: '0', STORAGE_DIR: storageDir, SEED_DEMO: 'true', GATEWAY_ADMIN_TOKEN: `sluice_test_${'x'.repeat(32)}` })
  assert.deepEqual(problems, [])
  const gateway = await startGateway(config, () => {})
  const server = await startEmbeddedPostgres(path.join(storageDir, 'postgres')) // adopts the running one: its URLs
  const owner = postgres(server.url, { max: 1, onnotice: () => {} })
  const admin = postgres(server.adminUrl, { max: 1, onnotice: () => {} })
  try {
    // The gateway works on it: migrations, the demo seed, an export as the admin token (no dbRole).
    const res = await fetch(`${gateway.url}/api/datasets/contacts/exports?limit=5`, { method: 'POST', headers: { Authorization: `Bearer ${config.adminToken}` } })
    assert.equal(res.status, 202, await res.clone().text())
    const { id } = (await res.json()) as { id: string }
    let state = ''
    for (let i = 0; i < 200 && !['succeeded', 'failed'].includes(state); i++) {
      await new Promise((r) => setTimeout(r, 100))
      state = ((await (await fetch(`${gateway.url}/api/tasks/${id}`, { headers: { Authorization: `Bearer ${config.adminToken}` } })).json()) as { state: string }).state
    }
    assert.equal(state, 'succeeded')

    const users = await admin`select distinct usename from pg_stat_activity where datname = 'postgres' and backend_type = 'client backend' and pid <> pg_backend_pid()`
    assert.deepEqual(users.map((u) => u.usename).filter((u) => u !== 'postgres'), ['sluice'], 'the gateway connects as the owner role')
    assert.deepEqual([...await owner`select rolsuper, rolcreaterole, rolbypassrls from pg_roles where rolname = current_user`], [{ rolsuper: false, rolcreaterole: false, rolbypassrls: false }])
    assert.equal(await refusal(owner, 'select rolpassword from pg_authid'), '42501')
    assert.equal(await refusal(owner, `copy (select 1) to program 'true'`), '42501')
    assert.equal(await refusal(owner, `select pg_read_file('PG_VERSION')`), '42501')
    assert.deepEqual([...await owner`select tableowner from pg_tables where schemaname = 'public' and tablename = 'contacts'`], [{ tableowner: 'sluice' }])
    // An operator in psql as the owner creates an unqualified table where datasets are looked
    // for, not in the gateway's own schema, which "$user" would put first (a CI run found it).
    await owner.unsafe('create table made_in_psql (n int)')
    assert.deepEqual([...await owner`select schemaname from pg_tables where tablename = 'made_in_psql'`], [{ schemaname: 'public' }])
    assert.equal((await fetch(`${gateway.url}/api/datasets/made_in_psql`, { headers: { Authorization: `Bearer ${config.adminToken}` } })).status, 200)
  } finally {
    await owner.end()
    await admin.end()
    await gateway.stop(2_000)
  }
})

test('a cluster whose objects the superuser owns is handed to the owner role on the next start', { timeout: 120_000 }, async () => {
  const dataDir = path.join(scratch, 'older', 'postgres')
  let server = await startEmbeddedPostgres(dataDir)
  const admin = postgres(server.adminUrl, { max: 1, onnotice: () => {} })
  // What an earlier version left: the superuser's schema, table, identity sequence, view, function and enum.
  await admin.unsafe(`
    create schema if not exists sluice;
    create type public.mood as enum ('ok', 'meh');
    create table sluice.old_tasks (id bigint generated always as identity primary key, mood public.mood);
    create table public.customers (id serial primary key, name text);
    create view public.customer_names as select name from public.customers;
    create function public.shout(t text) returns text language sql as $$ select upper(t) $$;
    alter schema sluice owner to postgres; alter table sluice.old_tasks owner to postgres; alter table public.customers owner to postgres;
    alter view public.customer_names owner to postgres; alter function public.shout(text) owner to postgres; alter type public.mood owner to postgres;
  `)
  await admin.end()
  await server.stop()

  server = await startEmbeddedPostgres(dataDir)
  const owner = postgres(server.url, { max: 1, onnotice: () => {} })
  try {
    const owners = await owner`
      select c.relname as name, pg_get_userbyid(c.relowner) as owner from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname in ('public', 'sluice') and c.relname in ('old_tasks', 'old_tasks_id_seq', 'customers', 'customers_id_seq', 'customer_names') order by 1`
    assert.deepEqual(owners.map((r) => [r.name, r.owner]), [
      ['customer_names', 'sluice'], ['customers', 'sluice'], ['customers_id_seq', 'sluice'], ['old_tasks', 'sluice'], ['old_tasks_id_seq', 'sluice'],
    ])
    assert.deepEqual([...await owner`select pg_get_userbyid(nspowner) as owner from pg_namespace where nspname = 'sluice'`], [{ owner: 'sluice' }])
    // The owner can now do what the gateway does with them.
    await owner`insert into public.customers (name) values ('Ada')`
    assert.deepEqual([...await owner`select public.shout(name) as s from public.customer_names`], [{ s: 'ADA' }])
    await owner`insert into sluice.old_tasks (mood) values ('ok')`
    await owner.unsafe(`alter type public.mood add value 'great'`)
  } finally {
    await owner.end()
    await server.stop()
  }
})
