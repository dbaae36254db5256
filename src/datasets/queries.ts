import type { Sql } from '../db/client.ts'

export type Column = { name: string; type: string; nullable: boolean; typeOid: number; typeCategory: string }
export type DatasetKind = 'table' | 'view' | 'materialized view' | 'foreign table'
export type Dataset = {
  name: string
  schema: string
  kind: DatasetKind
  columns: Column[]
  primaryKey: string[] | null
  uniqueKeys: string[][]
  rowEstimate: number | null
  /** Whether the current role may insert into it (imports). */
  canImport: boolean
}

/**
 * Every relation in `schema` the current role may read. Views count: an operator
 * defines a joined or computed query set by creating one.
 */
export async function listDatasets(sql: Sql, schema: string, onlyName: string | null = null): Promise<Dataset[]> {
  const rows = await sql<Dataset[]>`
    select c.relname as name,
           n.nspname as schema,
           case c.relkind when 'v' then 'view' when 'm' then 'materialized view' when 'f' then 'foreign table' else 'table' end as kind,
           case when c.relkind in ('r', 'm') and c.reltuples >= 0 then c.reltuples::int8 end as "rowEstimate",
           c.relkind in ('r', 'p') and has_table_privilege(c.oid, 'INSERT') as "canImport",
           coalesce((
             select json_agg(json_build_object(
                      'name', a.attname,
                      'type', format_type(a.atttypid, a.atttypmod),
                      'nullable', not a.attnotnull,
                      'typeOid', a.atttypid::int,
                      'typeCategory', t.typcategory)
                    order by a.attnum)
             from pg_attribute a
             join pg_type t on t.oid = a.atttypid
             where a.attrelid = c.oid
               and a.attnum > 0
               and not a.attisdropped
               and has_column_privilege(c.oid, a.attnum, 'SELECT')
           ), '[]') as columns,
           (
             select json_agg(a.attname order by k.position)
             from pg_constraint pk
             cross join unnest(pk.conkey) with ordinality as k(attnum, position)
             join pg_attribute a on a.attrelid = c.oid and a.attnum = k.attnum
             where pk.conrelid = c.oid and pk.contype = 'p'
           ) as "primaryKey",
           coalesce((
             select json_agg((
                      select json_agg(a.attname order by k.position)
                      from unnest(i.indkey::int2[]) with ordinality as k(attnum, position)
                      join pg_attribute a on a.attrelid = c.oid and a.attnum = k.attnum))
             from pg_index i
             where i.indrelid = c.oid and i.indisunique and not i.indisprimary
               and i.indpred is null and i.indexprs is null
           ), '[]') as "uniqueKeys"
    from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = ${schema}
      and c.relkind in ('r', 'p', 'v', 'm', 'f')
      and not c.relispartition
      and has_table_privilege(c.oid, 'SELECT')
      and (${onlyName}::text is null or c.relname = ${onlyName})
    order by c.relname
  `
  return rows.map((row) => ({ ...row }))
}

export async function findDataset(sql: Sql, schema: string, name: string): Promise<Dataset | null> {
  if (name.includes('\0')) return null // no name holds NUL, and PostgreSQL text refuses it (an error, not "not found")
  const [dataset] = await listDatasets(sql, schema, name)
  return dataset ?? null
}
