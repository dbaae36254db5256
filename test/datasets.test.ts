import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { startTestGateway, type TestGateway } from './support/gateway.ts'

let db: TestDatabase
let gateway: TestGateway
// Roles are cluster-wide: a unique name keeps runs on a shared server apart.
const reader = `reader_${process.pid}_${Date.now()}`

type DatasetJson = {
  name: string
  kind: string
  columns: { name: string; type: string; nullable: boolean }[]
  primaryKey: string[] | null
  uniqueKeys: string[][]
  rowEstimate: number | null
}

before(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create type mood as enum ('happy', 'sad');
    create table orders (
      id int primary key,
      code text not null unique,
      amount numeric(10, 2),
      placed_at timestamptz not null default now(),
      mood mood,
      tags text[]
    );
    insert into orders (id, code, amount) select g, 'o' || g, g * 1.5 from generate_series(1, 500) g;
    analyze orders;
    create table "Odd ""Name"" Ünïcode" ("Line Item" int, "quote""d" text, "ÉTÉ" date, "with,comma" text,
      primary key ("Line Item", "ÉTÉ"));
    create view big_orders as select id, amount from orders where amount > 100;
    create materialized view order_totals as select count(*) as n, sum(amount) as total from orders;
    create table secret (id int);
    revoke all on secret from public;
    create schema other;
    create table other.not_a_dataset (id int);
  `)
  gateway = await startTestGateway(db.url)
})

after(async () => {
  await gateway?.stop()
  await db?.drop()
})

async function datasets(): Promise<DatasetJson[]> {
  const res = await gateway.fetch('/api/datasets')
  assert.equal(res.status, 200)
  return (await res.json()) as DatasetJson[]
}

test('lists tables, views and materialized views of the dataset schema only', async () => {
  const found = await datasets()
  const byName = new Map(found.map((d) => [d.name, d]))
  assert.equal(byName.get('orders')?.kind, 'table')
  assert.equal(byName.get('big_orders')?.kind, 'view')
  assert.equal(byName.get('order_totals')?.kind, 'materialized view')
  assert.ok(!byName.has('not_a_dataset'), 'tables of other schemas are not datasets')
  assert.ok(!found.some((d) => d.name === 'tasks'), "the gateway's own tables are not datasets")
})

test('describes columns, types, nullability, keys and a row estimate', async () => {
  const orders = (await datasets()).find((d) => d.name === 'orders')!
  assert.deepEqual(orders.columns, [
    { name: 'id', type: 'integer', nullable: false },
    { name: 'code', type: 'text', nullable: false },
    { name: 'amount', type: 'numeric(10,2)', nullable: true },
    { name: 'placed_at', type: 'timestamp with time zone', nullable: false },
    { name: 'mood', type: 'mood', nullable: true },
    { name: 'tags', type: 'text[]', nullable: true },
  ])
  assert.deepEqual(orders.primaryKey, ['id'])
  assert.deepEqual(orders.uniqueKeys, [['code']])
  assert.equal(orders.rowEstimate, 500)
  const view = (await datasets()).find((d) => d.name === 'big_orders')!
  assert.equal(view.primaryKey, null)
  assert.equal(view.rowEstimate, null)
})

test('names with spaces, quotes, capitals and non-ASCII letters are kept exactly', async () => {
  const odd = (await datasets()).find((d) => d.name === 'Odd "Name" Ünïcode')
  assert.ok(odd, 'the oddly named table is listed')
  assert.deepEqual(odd.columns.map((c) => c.name), ['Line Item', 'quote"d', 'ÉTÉ', 'with,comma'])
  assert.deepEqual(odd.primaryKey, ['Line Item', 'ÉTÉ'])
  const page = await gateway.fetch(`/datasets/${encodeURIComponent('Odd "Name" Ünïcode')}`)
  assert.equal(page.status, 200)
  const html = await page.text()
  assert.match(html, /Odd &quot;Name&quot; Ünïcode|Odd &#34;Name&#34; Ünïcode/)
})

test('a table the role may not read is not a dataset', async () => {
  const restrictedUrl = new URL(db.url)
  await db.sql.unsafe(`create role ${reader} login password 'pw'; grant select on orders to ${reader}`)
  restrictedUrl.username = reader
  restrictedUrl.password = 'pw'
  const postgres = (await import('postgres')).default
  const restricted = postgres(restrictedUrl.href, { max: 1 })
  try {
    const { listDatasets } = await import('../src/datasets/index.ts')
    const names = (await listDatasets(restricted, 'public')).map((d) => d.name)
    assert.ok(names.includes('orders'))
    assert.ok(!names.includes('secret'), 'no SELECT privilege: not listed')
  } finally {
    await restricted.end()
    await db.sql.unsafe(`drop owned by ${reader}; drop role ${reader}`)
  }
})

test('an unknown dataset is a 404 on the API and on the page', async () => {
  const api = await gateway.fetch('/api/datasets/nope/exports', { method: 'POST' })
  assert.equal(api.status, 404)
  assert.match(((await api.json()) as { error: string }).error, /no dataset named "nope"/)
  const page = await gateway.fetch('/datasets/nope')
  assert.equal(page.status, 404)
})

test('healthz answers ok once the database is reachable and migrated', async () => {
  const res = await gateway.fetch('/healthz')
  assert.equal(res.status, 200)
  assert.deepEqual(await res.json(), { ok: true })
})
