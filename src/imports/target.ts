import type { Sql } from '../db/client.ts'

export type TargetColumn = {
  name: string
  type: string // format_type: 'integer', 'character varying(20)', 'mood', 'text[]'
  typeName: string // pg_type.typname: 'int4', 'varchar', 'mood', '_text'
  category: string // pg_type.typcategory: N numeric, D date/time, B boolean, S string, E enum, A array, U user...
  notNull: boolean
  hasDefault: boolean
  generated: boolean // GENERATED ALWAYS AS (...) STORED: cannot be written
  identityAlways: boolean
  enumLabels: string[] | null
}
export type ForeignKey = { name: string; columns: string[]; refSchema: string; refTable: string; refColumns: string[] }
export type CheckConstraint = { name: string; expression: string }

export type Target = {
  schema: string
  name: string
  columns: TargetColumn[]
  uniqueKeys: string[][] // primary key first
  primaryKey: string[] | null
  foreignKeys: ForeignKey[]
  checks: CheckConstraint[]
  /**
   * Foreign keys, deferrable constraints or AFTER triggers: checked when a statement
   * ends, i.e. after COPY's last row. postgres.js loses an error raised then (the COPY
   * stream has already finished) and would wait forever, so such tables are loaded
   * through a temp table and one INSERT ... SELECT instead.
   */
  checksAtStatementEnd: boolean
  /**
   * Row-level security is on: PostgreSQL refuses COPY FROM into such a table for a role
   * it applies to, so rows go in through INSERT ... SELECT from staging.
   */
  rowSecurity: boolean
}

/** What an import must know of its table to validate rows set-wise before loading them. */
export async function describeTarget(sql: Sql, schema: string, name: string): Promise<Target | null> {
  const [row] = await sql<{ oid: number; rowSecurity: boolean }[]>`
    select c.oid::int as oid, c.relrowsecurity as "rowSecurity" from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = ${schema} and c.relname = ${name} and c.relkind in ('r', 'p')`
  if (!row) return null
  const { oid, rowSecurity } = row
  const columns = await sql<TargetColumn[]>`
    select a.attname as name, format_type(a.atttypid, a.atttypmod) as type, t.typname as "typeName",
           t.typcategory as category, a.attnotnull as "notNull",
           (a.atthasdef or a.attidentity <> '') as "hasDefault",
           a.attgenerated <> '' as generated, a.attidentity = 'a' as "identityAlways",
           case when t.typtype = 'e' then (select array_agg(e.enumlabel order by e.enumsortorder) from pg_enum e where e.enumtypid = t.oid) end as "enumLabels"
    from pg_attribute a join pg_type t on t.oid = a.atttypid
    where a.attrelid = ${oid} and a.attnum > 0 and not a.attisdropped
    order by a.attnum`
  const constraints = await sql<{ name: string; type: string; columns: string[]; refSchema: string | null; refTable: string | null; refColumns: string[] | null; expression: string | null }[]>`
    select con.conname as name, con.contype as type,
           array(select a.attname from unnest(con.conkey) with ordinality k(n, i) join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.n order by k.i) as columns,
           rn.nspname as "refSchema", rc.relname as "refTable",
           case when con.contype = 'f' then array(select a.attname from unnest(con.confkey) with ordinality k(n, i) join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.n order by k.i) end as "refColumns",
           case when con.contype = 'c' then pg_get_expr(con.conbin, con.conrelid) end as expression
    from pg_constraint con
    left join pg_class rc on rc.oid = con.confrelid
    left join pg_namespace rn on rn.oid = rc.relnamespace
    where con.conrelid = ${oid} and con.contype in ('p', 'u', 'f', 'c')
    order by con.contype = 'p' desc, con.conname`
  const uniqueIndexes = await sql<{ columns: string[] }[]>`
    select array(select a.attname from unnest(i.indkey::int2[]) with ordinality k(n, o) join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.n order by k.o) as columns
    from pg_index i
    where i.indrelid = ${oid} and i.indisunique and i.indpred is null and i.indexprs is null`
  const [late] = await sql<{ found: boolean }[]>`
    select exists (select 1 from pg_constraint where conrelid = ${oid} and (contype = 'f' or condeferrable))
        or exists (select 1 from pg_trigger where tgrelid = ${oid} and not tgisinternal and tgtype & 66 = 0) as found`
  const primary = constraints.find((c) => c.type === 'p')
  const keys = [primary?.columns, ...constraints.filter((c) => c.type === 'u').map((c) => c.columns), ...uniqueIndexes.map((i) => i.columns)]
  const uniqueKeys: string[][] = []
  for (const k of keys) if (k && !uniqueKeys.some((u) => u.join('\0') === k.join('\0'))) uniqueKeys.push(k)
  return {
    schema,
    name,
    columns: columns.map((c) => ({ ...c })),
    uniqueKeys,
    primaryKey: primary?.columns ?? null,
    foreignKeys: constraints.filter((c) => c.type === 'f').map((c) => ({ name: c.name, columns: c.columns, refSchema: c.refSchema!, refTable: c.refTable!, refColumns: c.refColumns! })),
    checks: constraints.filter((c) => c.type === 'c').map((c) => ({ name: c.name, expression: c.expression! })),
    checksAtStatementEnd: late!.found,
    rowSecurity,
  }
}
