// `npm run bench`: the gateway against the physical limit (psql \copy) on the same
// server and data, in one run. Prints ratios and the gateway's peak memory; then the
// load part (bench/load.ts): status polls while tasks run.
// `npm run bench -- copy`, `-- load` or `-- messy` (bench/messy.ts) runs one part only.
// BENCH_ROWS (default 2,000,000), BENCH_RUNS (3), BENCH_LARGE=1 adds an import ten times larger.
import { createReadStream } from 'node:fs'
import { mkdir, rm, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { Readable } from 'node:stream'
import postgres from 'postgres'
import { startEmbeddedPostgres } from '../src/db/embedded.ts'
import { benchLoad, printLoad, type LoadResult } from './load.ts'
import { benchMessy, printMessy, type MessyResult } from './messy.ts'
import { buildRowsTable, commandAvailable, median, psqlAvailable, psqlCopy, run, sampleTreeRss, seconds, startGatewayProcess, waitForTask, type GatewayProcess } from './support.ts'

const PARTS = ['copy', 'load', 'messy'] as const
const chosen = process.argv.slice(2)
const unknown = chosen.filter((part) => !(PARTS as readonly string[]).includes(part))
if (unknown.length > 0) {
  console.error(`unknown bench part "${unknown.join('", "')}"; choose from ${PARTS.join(', ')} (none: all)`)
  process.exit(1)
}
const runs = (part: (typeof PARTS)[number]) => chosen.length === 0 || chosen.includes(part)

const ROWS = Number(process.env.BENCH_ROWS ?? 2_000_000)
const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const WORK = path.resolve('.bench')
const TARGETS = { exportRatio: 1.2, importRatio: 1.5, rssMb: 250 }

if ((runs('copy') || runs('messy')) && !(await psqlAvailable())) {
  console.error('npm run bench compares against psql: apt-get install postgresql-client')
  process.exit(1)
}
await rm(WORK, { recursive: true, force: true })
await mkdir(WORK, { recursive: true })
const started = process.hrtime.bigint()
const pg = process.env.BENCH_DATABASE_URL ? null : await startEmbeddedPostgres(path.join(WORK, 'pg', 'postgres'))
const databaseUrl = process.env.BENCH_DATABASE_URL ?? pg!.url
const sql = postgres(databaseUrl, { onnotice: () => {} })
type Row = { case: string; gatewayS: number; psqlS: number; ratio: number; rows: number; mb: number; peakRssMb: number; other?: string }
const results: Row[] = []
let load: LoadResult | null = null
let messy: MessyResult | null = null

try {
  if (runs('copy')) await benchCopy()
  if (runs('load')) load = await benchLoad(sql, databaseUrl, path.join(WORK, 'load'))
  if (runs('messy')) messy = await benchMessy(sql, databaseUrl, path.join(WORK, 'messy'))
} finally {
  await sql.end()
  await pg?.stop()
}

if (runs('copy')) printResults()
if (load) printLoad(load)
if (messy) printMessy(messy)
await writeFile(path.join(WORK, 'results.json'), JSON.stringify({ rows: ROWS, runs: RUNS, results, load, messy }, null, 2))
console.log(`\ntotal bench time ${seconds(started).toFixed(0)} s; results in .bench/results.json`)

async function benchCopy() {
  console.log(`building bench_rows: ${ROWS.toLocaleString('en-US')} rows…`)
  await buildRowsTable(sql, 'bench_rows', ROWS)
  await buildRowsTable(sql, 'bench_import', 0)

  const gateway = await startGatewayProcess({ DATABASE_URL: databaseUrl, STORAGE_DIR: path.join(WORK, 'storage'), TASK_CONCURRENCY: '2' })
  const rss = sampleTreeRss(gateway.child.pid!)

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
        const res = await gateway.fetch(`/api/datasets/bench_rows/exports${c.query ? `?${c.query}` : ''}`, { method: 'POST' })
        const task = await waitForTask(gateway, ((await res.json()) as { id: string }).id)
        gatewayTimes.push(seconds(start))
        if (task.state !== 'succeeded') throw new Error(`export failed: ${task.error}`)
        rows = task.progress.rows
        bytes = task.file!.size
        const file = path.join(WORK, 'psql-export.csv')
        psqlTimes.push(await psqlCopy(databaseUrl, `\\copy (${c.select}) to ${c.gzip ? `program 'gzip -6 > ${file}.gz'` : `'${file}'`} csv header`))
      }
      const [counted] = await sql.unsafe(`select count(*)::int as expected from (${c.select}) q`)
      const expected = Number(counted!.expected)
      if (rows !== expected) throw new Error(`${c.name}: the gateway wrote ${rows} rows, the query has ${expected}`)
      results.push(row(c.name, gatewayTimes, psqlTimes, rows, bytes, rss.peakMb()))
    }

    // Import the whole-table export back: a real CSV of every row.
    const importFile = path.join(WORK, 'import.csv')
    await psqlCopy(databaseUrl, `\\copy (select * from public.bench_rows) to '${importFile}' csv header`)
    results.push(await benchImport(gateway, rss, 'import, insert', importFile))
    if (await commandAvailable('pgloader')) results.at(-1)!.other = await pgloaderSeconds(importFile)

    if (process.env.BENCH_LARGE === '1') {
      const large = path.join(WORK, 'import-10x.csv')
      await psqlCopy(databaseUrl, `\\copy (select g * ${ROWS} + r.id as id, r.name, r.email, r.amount, r.created_at, r.active, r.note, r.description from public.bench_rows r, generate_series(0, 9) g) to '${large}' csv header`)
      results.push(await benchImport(gateway, rss, 'import, insert, 10x file', large, 1))
    }
  } finally {
    await rss.stop()
    await gateway.stop()
  }
}

async function benchImport(gateway: GatewayProcess, rss: ReturnType<typeof sampleTreeRss>, name: string, file: string, runs = RUNS): Promise<Row> {
  const size = (await stat(file)).size
  const gatewayTimes: number[] = []
  const psqlTimes: number[] = []
  let rows = 0
  rss.reset()
  for (let i = 0; i < runs; i++) {
    await sql`truncate bench_import`
    const start = process.hrtime.bigint()
    const res = await gateway.fetch('/api/datasets/bench_import/imports', {
      method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: Readable.toWeb(createReadStream(file)) as never, duplex: 'half',
    } as RequestInit)
    const task = await waitForTask(gateway, ((await res.json()) as { id: string }).id)
    gatewayTimes.push(seconds(start))
    if (task.state !== 'succeeded') throw new Error(`import failed: ${task.error}`)
    rows = task.details.inserted ?? 0
    await sql`truncate bench_import`
    psqlTimes.push(await psqlCopy(databaseUrl, `\\copy public.bench_import from '${file}' csv header`))
  }
  return row(name, gatewayTimes, psqlTimes, rows, size, rss.peakMb())
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

function row(name: string, gatewayTimes: number[], psqlTimes: number[], rows: number, bytes: number, peakRssMb: number): Row {
  const g = median(gatewayTimes)
  const p = median(psqlTimes)
  return { case: name, gatewayS: g, psqlS: p, ratio: g / p, rows, mb: bytes / 1e6, peakRssMb }
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
