// `npm run bench`: the gateway against the physical limit (psql \copy) on the same
// server and data, in one run. Prints ratios and the gateway's peak memory.
// BENCH_ROWS (default 2,000,000), BENCH_RUNS (3), BENCH_LARGE=1 adds an import ten times larger.
import { createReadStream } from 'node:fs'
import { mkdir, rm, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { Readable } from 'node:stream'
import postgres from 'postgres'
import { startEmbeddedPostgres } from '../src/db/embedded.ts'
import { commandAvailable, median, psqlAvailable, psqlCopy, run, sampleTreeRss, seconds, startGatewayProcess, waitForTask } from './support.ts'

const ROWS = Number(process.env.BENCH_ROWS ?? 2_000_000)
const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const WORK = path.resolve('.bench')
const TARGETS = { exportRatio: 1.2, importRatio: 1.5, rssMb: 250 }

if (!(await psqlAvailable())) {
  console.error('npm run bench compares against psql: apt-get install postgresql-client')
  process.exit(1)
}
await rm(WORK, { recursive: true, force: true })
await mkdir(WORK, { recursive: true })
const started = process.hrtime.bigint()
const pg = process.env.BENCH_DATABASE_URL ? null : await startEmbeddedPostgres(path.join(WORK, 'pg', 'postgres'))
const databaseUrl = process.env.BENCH_DATABASE_URL ?? pg!.url
const sql = postgres(databaseUrl, { onnotice: () => {} })
const COLUMNS = `id bigint primary key, name text not null, email text not null, amount numeric(12, 2), created_at timestamptz, active boolean, note text, description text`
console.log(`building bench_rows: ${ROWS.toLocaleString('en-US')} rows…`)
await sql.unsafe(`
  drop table if exists bench_rows, bench_import;
  create table bench_rows (${COLUMNS});
  insert into bench_rows
  select i, 'Customer ' || i, 'user' || i || '@example.com', (i * 7919 % 1000000) / 100.0,
         timestamptz '2024-01-01' + make_interval(secs => i * 13 % 31536000), i % 3 <> 0,
         case when i % 7 = 0 then 'said "hi", then left' when i % 11 = 0 then null else '' end,
         repeat(md5(i::text), 3)
  from generate_series(1::bigint, ${ROWS}) as i;
  analyze bench_rows;
  create table bench_import (${COLUMNS});
`)

const gateway = await startGatewayProcess({ DATABASE_URL: databaseUrl, STORAGE_DIR: path.join(WORK, 'storage'), TASK_CONCURRENCY: '2' })
const rss = sampleTreeRss(gateway.child.pid!)
type Row = { case: string; gatewayS: number; psqlS: number; ratio: number; rows: number; mb: number; peakRssMb: number; other?: string }
const results: Row[] = []

try {
  const exportCases = [
    { name: 'export, whole table', query: '', select: 'select * from public.bench_rows', where: '' },
    { name: 'export, filtered + ordered', query: 'select=id,email,amount,created_at&amount=gt.5000&active=is.true&order=id.desc', select: 'select id, email, amount, created_at from public.bench_rows where amount > 5000 and active is true order by id desc' },
    { name: 'export, gzip', query: 'gzip=true', select: 'select * from public.bench_rows', gzip: true },
  ]
  for (const c of exportCases) {
    const gatewayTimes: number[] = []
    const psqlTimes: number[] = []
    let rows = 0
    let bytes = 0
    rss.reset()
    for (let i = 0; i < RUNS; i++) {
      const start = process.hrtime.bigint()
      const res = await fetch(`${gateway.url}/api/datasets/bench_rows/exports${c.query ? `?${c.query}` : ''}`, { method: 'POST' })
      const task = await waitForTask(gateway.url, ((await res.json()) as { id: string }).id)
      gatewayTimes.push(seconds(start))
      if (task.state !== 'succeeded') throw new Error(`export failed: ${task.error}`)
      rows = task.progress.rows
      bytes = (task as unknown as { file: { size: number } }).file.size
      const file = path.join(WORK, 'psql-export.csv')
      psqlTimes.push(await psqlCopy(databaseUrl, `\\copy (${c.select}) to ${c.gzip ? `program 'gzip -6 > ${file}.gz'` : `'${file}'`} csv header`))
    }
    const [counted] = await sql.unsafe(`select count(*)::int as expected from (${c.select}) q`)
    const expected = Number(counted!.expected)
    if (rows !== expected) throw new Error(`${c.name}: the gateway wrote ${rows} rows, the query has ${expected}`)
    results.push(row(c.name, gatewayTimes, psqlTimes, rows, bytes))
  }

  // Import the whole-table export back: a real CSV of every row.
  const importFile = path.join(WORK, 'import.csv')
  await psqlCopy(databaseUrl, `\\copy (select * from public.bench_rows) to '${importFile}' csv header`)
  results.push(await benchImport('import, insert', importFile))
  if (await commandAvailable('pgloader')) results.at(-1)!.other = await pgloaderSeconds(importFile)

  if (process.env.BENCH_LARGE === '1') {
    const large = path.join(WORK, 'import-10x.csv')
    await psqlCopy(databaseUrl, `\\copy (select g * ${ROWS} + r.id as id, r.name, r.email, r.amount, r.created_at, r.active, r.note, r.description from public.bench_rows r, generate_series(0, 9) g) to '${large}' csv header`)
    results.push(await benchImport('import, insert, 10x file', large, 1))
  }
} finally {
  await rss.stop()
  await gateway.stop()
  await sql.end()
  await pg?.stop()
}

printResults()
await writeFile(path.join(WORK, 'results.json'), JSON.stringify({ rows: ROWS, runs: RUNS, results }, null, 2))
console.log(`\ntotal bench time ${seconds(started).toFixed(0)} s; results in .bench/results.json`)

async function benchImport(name: string, file: string, runs = RUNS): Promise<Row> {
  const size = (await stat(file)).size
  const gatewayTimes: number[] = []
  const psqlTimes: number[] = []
  let rows = 0
  rss.reset()
  for (let i = 0; i < runs; i++) {
    await sql`truncate bench_import`
    const start = process.hrtime.bigint()
    const res = await fetch(`${gateway.url}/api/datasets/bench_import/imports`, {
      method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: Readable.toWeb(createReadStream(file)) as never, duplex: 'half',
    } as RequestInit)
    const task = await waitForTask(gateway.url, ((await res.json()) as { id: string }).id)
    gatewayTimes.push(seconds(start))
    if (task.state !== 'succeeded') throw new Error(`import failed: ${task.error}`)
    rows = task.details.inserted ?? 0
    await sql`truncate bench_import`
    psqlTimes.push(await psqlCopy(databaseUrl, `\\copy public.bench_import from '${file}' csv header`))
  }
  return row(name, gatewayTimes, psqlTimes, rows, size)
}

async function pgloaderSeconds(file: string): Promise<string> {
  await sql`truncate bench_import`
  const url = new URL(databaseUrl)
  url.searchParams.set('tablename', 'bench_import')
  const start = process.hrtime.bigint()
  try {
    await run('pgloader', ['--type', 'csv', '--field', 'id,name,email,amount,created_at,active,note,description', '--with', 'skip header = 1', '--with', 'fields optionally enclosed by \'"\'', '--with', 'fields terminated by \',\'', file, url.href], { maxBuffer: 1 << 24 })
    return `pgloader ${seconds(start).toFixed(2)} s`
  } catch (err) {
    return `pgloader failed: ${(err as Error).message.split('\n')[0]}`
  }
}

function row(name: string, gatewayTimes: number[], psqlTimes: number[], rows: number, bytes: number): Row {
  const g = median(gatewayTimes)
  const p = median(psqlTimes)
  return { case: name, gatewayS: g, psqlS: p, ratio: g / p, rows, mb: bytes / 1e6, peakRssMb: rss.peakMb() }
}

function printResults() {
  console.log(`\n${ROWS.toLocaleString('en-US')} rows, median of ${RUNS} runs each, gateway and psql alternating on the same server\n`)
  const header = ['case', 'gateway s', 'psql s', 'ratio', 'rows', 'MB', 'MB/s', 'peak RSS MB', 'other']
  const lines = results.map((r) => [r.case, r.gatewayS.toFixed(2), r.psqlS.toFixed(2), r.ratio.toFixed(2), r.rows.toLocaleString('en-US'), r.mb.toFixed(0), (r.mb / r.gatewayS).toFixed(0), r.peakRssMb.toFixed(0), r.other ?? ''])
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)))
  for (const l of [header, ...lines]) console.log(l.map((cell, i) => cell.padEnd(widths[i]!)).join('  '))
  console.log('')
  for (const r of results) {
    const target = r.case.startsWith('export') ? TARGETS.exportRatio : TARGETS.importRatio
    const ok = r.ratio <= target && r.peakRssMb < TARGETS.rssMb
    console.log(`${ok ? 'met   ' : 'MISSED'} ${r.case}: ratio ${r.ratio.toFixed(2)} (target ≤ ${target}), peak RSS ${r.peakRssMb.toFixed(0)} MB (target < ${TARGETS.rssMb})`)
  }
}
