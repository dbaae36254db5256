import type { Sql } from '../db/client.ts'

/**
 * A realistic dataset for a newcomer to export at once: 100,000 contacts of mixed
 * types, with the awkward values real exports must survive (commas, quotes,
 * newlines, non-ASCII, NULL next to empty strings). Deterministic, so the same
 * every first start.
 */
export async function seedDemoDataset(sql: Sql, schema: string, rows = 100_000): Promise<void> {
  await sql.begin(async (tx) => {
    // A one-off of some seconds on a slow disk: the request pool's statement timeout is not for it.
    await tx`set local statement_timeout = 0`
    await tx`create schema if not exists ${tx(schema)}`
    await tx`
      create table if not exists ${tx(schema)}.contacts (
        id bigint generated always as identity primary key,
        first_name text not null,
        last_name text not null,
        email text not null unique,
        country char(2) not null,
        signup_date date not null,
        last_seen timestamptz,
        lifetime_value numeric(12, 2) not null default 0,
        is_active boolean not null default true,
        tags text[] not null default '{}',
        notes text
      )
    `
    const [existing] = await tx`select 1 from ${tx(schema)}.contacts limit 1`
    if (existing) return
    await tx`
      insert into ${tx(schema)}.contacts (first_name, last_name, email, country, signup_date, last_seen, lifetime_value, is_active, tags, notes)
      select first_names[1 + i % array_length(first_names, 1)],
             last_names[1 + (i * 7) % array_length(last_names, 1)],
             format('%s.%s.%s@example.com', lower(first_names[1 + i % array_length(first_names, 1)]), i, (i * 31) % 97),
             countries[1 + (i * 13) % array_length(countries, 1)],
             date '2019-01-01' + (i * 37) % 2190,
             case when i % 11 = 0 then null else timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => (i::bigint * 7919) % 60000000) end,
             ((i::bigint * 104729) % 1000000) / 100.0,
             i % 9 <> 0,
             case i % 5 when 0 then '{}' when 1 then '{vip}' when 2 then '{newsletter,beta}' when 3 then '{"needs, quoting"}' else '{churn-risk}' end::text[],
             case i % 8
               when 0 then null
               when 1 then ''
               when 2 then 'Prefers email, not phone'
               when 3 then 'Said "call me back" on Monday'
               when 4 then E'Two-line note:\nsecond line'
               when 5 then 'Café in Zürich; façade ø — 東京 ✓'
               else 'Regular customer'
             end
      from generate_series(1, ${rows}) as i,
           lateral (select
             array['Ada', 'Grace', 'Linus', 'Margaret', 'José', 'Zoë', 'Søren', 'Aiko', 'Chidi', 'Olga', 'Mateus', 'Fatima'] as first_names,
             array['Lovelace', 'Hopper', 'Torvalds', 'Hamilton', 'García', 'O''Brien', 'Müller', 'Tanaka', 'Okafor', 'Ivanova'] as last_names,
             array['GB', 'US', 'DE', 'FR', 'ES', 'JP', 'NG', 'BR', 'IN', 'NL'] as countries) as pools
    `
    await tx`
      create or replace view ${tx(schema)}.active_contacts_by_country as
      select country, count(*) as contacts, sum(lifetime_value) as lifetime_value, max(last_seen) as last_seen
      from ${tx(schema)}.contacts
      where is_active
      group by country
    `
  })
  await sql`analyze ${sql(schema)}.contacts`
}
