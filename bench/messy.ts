// The messy part of `npm run bench` (alone: `npm run bench -- messy`), issue 10: an import
// of a file as people send them — windows-1252, `;`, CRLF, a header, 0.1% bad rows — with
// onError=skip and no reading options, so detection has to find all of it. The physical
// limit is psql's \copy of the same rows, minus the bad ones, as clean UTF-8 CSV.
// Target: within 2x psql, peak RSS < 250 MB; pgloader's time on the messy file beside it.
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs'
import { mkdir, stat, writeFile } from 'node:fs/promises'
import { once } from 'node:events'
import path from 'node:path'
import { Readable } from 'node:stream'
import iconv from 'iconv-lite'
import type postgres from 'postgres'
import { commandAvailable, median, psqlCopy, run, sampleTreeRss, seconds, startGatewayProcess, waitForTask, type GatewayProcess, type Task } from './support.ts'

const SETTINGS = {
  rows: Number(process.env.BENCH_MESSY_ROWS ?? 2_000_000),
  runs: Number(process.env.BENCH_RUNS ?? 3),
  /** pgloader retries a batch around each bad row; past this it is stopped and reported as such. */
  pgloaderCapSeconds: Number(process.env.BENCH_PGLOADER_CAP_SECONDS ?? 1800),
  cpuProfile: process.env.BENCH_MESSY_CPU_PROFILE === '1',
  /** BENCH_PGLOADER=0 skips pgloader (minutes on this file) while iterating. */
  pgloader: process.env.BENCH_PGLOADER !== '0',
}
export const MESSY_TARGETS = { ratio: 2.0, rssMb: 250 }

const TABLES = { gateway: 'messy_gateway', psql: 'messy_psql', pgloader: 'messy_pgloader' }
const COLUMNS = 'id bigint primary key, name text not null, city text, amount numeric(12, 2), born date, active boolean, note text'
const HEADER = ['id', 'name', 'city', 'amount', 'born', 'active', 'note']
// Every character below is in windows-1252 (€ „ “ ’ – Š ž Œ are in its 0x80-0x9F block, which
// ISO-8859-1 lacks); Č, ř and Ł are not, so no Čapek, Dvořák or Łódź.
const FIRST = ['Jürgen', 'Zoë', 'François', 'José', 'Søren', 'Ana', 'Björn', 'Noël', 'Šárka', 'Peter', 'Íñigo', 'Dörte']
const LAST = ['Müller', 'García', 'Šerbedžija', 'Østergaard', 'Smith', 'Núñez', 'Lefèvre', 'Öztürk', 'Žižek', 'Brontë', 'O’Brien', 'Ångström']
const CITIES = ['Zürich', 'Kraków', 'Málaga', 'Göteborg', 'São Paulo', 'Besançon', 'Reykjavík', 'Köln', 'Genève', 'Århus', 'Berlin']
const NOTES = ['Lieferung; bitte "dringend" anrufen', 'Rabatt 5 € – „Stammkunde“', 'Zahlung erhalten, danke', '', 'Rückruf erbeten: Œuvre d’art', 'ok', 'ok', 'ok', 'ok', 'ok']
// One row in 1,000 is bad, in one of these ways, each reported by the gateway as a row error.
const BAD_KINDS = ['date', 'date', 'number', 'number', 'duplicate'] as const
type BadKind = (typeof BAD_KINDS)[number]
const BAD_DATES = ['2024-02-31', '2023-04-31', '2023-13-01']
const BAD_NUMBERS = ['n/a', '12,50', '1.234,56']
const DAY_MS = 86_400_000
const BORN_FROM = Date.UTC(1940, 0, 1)

type Files = { messy: string; clean: string; messyBytes: number; cleanBytes: number; bad: Record<BadKind, number> }
type ImportDetails = { inserted?: number; failed?: number; lines?: Record<string, number | string | null>; dialect?: { encoding: string; delimiter: string; header: boolean; lineEnding: string } }
type Pgloader = { seconds: number; ratio: number; loaded: number | null; rejected: number | null; note: string } | { error: string }
export type MessyResult = {
  rows: number; bad: Record<BadKind, number> & { total: number }; runs: number; messyMb: number; cleanMb: number
  gatewayS: number; psqlS: number; ratio: number; peakRssMb: number; gatewayTimes: number[]; psqlTimes: number[]
  task: { inserted: number | null; failed: number | null; lines: ImportDetails['lines'] | null; dialect: ImportDetails['dialect'] | null }
  mismatches: string[]; pgloader: Pgloader | null; met: { ratio: boolean; rss: boolean }
}

/** Writes both files, imports the messy one through its own gateway and the clean one with psql, alternating; then pgloader once. */
export async function benchMessy(sql: postgres.Sql, databaseUrl: string, work: string): Promise<MessyResult> {
  await mkdir(work, { recursive: true })
  console.log(`messy: writing ${SETTINGS.rows.toLocaleString('en-US')} rows as windows-1252 ; CRLF, and the good ones as UTF-8 , LF…`)
  const files = await writeFiles(work, SETTINGS.rows)
  const badTotal = Object.values(files.bad).reduce((a, b) => a + b, 0)
  console.log(`messy: ${(files.messyBytes / 1e6).toFixed(0)} MB messy, ${(files.cleanBytes / 1e6).toFixed(0)} MB clean; bad rows written: ${badTotal} (${Object.entries(files.bad).map(([k, n]) => `${n} ${k}`).join(', ')})`)
  for (const table of Object.values(TABLES)) await sql.unsafe(`drop table if exists ${table}; create table ${table} (${COLUMNS})`)

  const profiles = path.join(work, 'profiles')
  const gateway = await startGatewayProcess({ DATABASE_URL: databaseUrl, STORAGE_DIR: path.join(work, 'storage'), TASK_CONCURRENCY: '2' },
    SETTINGS.cpuProfile ? ['--cpu-prof', `--cpu-prof-dir=${profiles}`] : [])
  const rss = sampleTreeRss(gateway.child.pid!)
  const gatewayTimes: number[] = []
  const psqlTimes: number[] = []
  const mismatches: string[] = []
  let details: ImportDetails = {}
  try {
    for (let i = 0; i < SETTINGS.runs; i++) {
      await sql.unsafe(`truncate ${TABLES.gateway}`)
      const { s, task } = await importThroughGateway(gateway, files.messy)
      gatewayTimes.push(s)
      details = task.details as ImportDetails
      mismatches.push(...checkTask(task, details, SETTINGS.rows, badTotal).map((m) => `run ${i + 1}: ${m}`))
      await sql.unsafe(`truncate ${TABLES.psql}`)
      psqlTimes.push(await psqlCopy(databaseUrl, `\\copy ${TABLES.psql} from '${files.clean}' with (format csv, header true)`))
      console.log(`messy: run ${i + 1}: gateway ${s.toFixed(2)} s, psql ${psqlTimes.at(-1)!.toFixed(2)} s`)
    }
  } finally {
    await rss.stop()
    await gateway.stop()
  }
  const [{ differing }] = await sql.unsafe(`select count(*)::int as differing from ${TABLES.gateway} g full join ${TABLES.psql} p on p.id = g.id where g is distinct from p`) as unknown as [{ differing: number }]
  if (differing > 0) mismatches.push(`${differing} rows differ between the gateway's table and psql's (decoding or a lost row)`)
  for (const m of mismatches) console.log(`MISMATCH ${m}`)
  if (SETTINGS.cpuProfile) console.log(`messy: CPU profiles in ${profiles} (summarise: node --import tsx bench/cpu-profile.ts ${profiles})`)

  const gatewayS = median(gatewayTimes)
  const psqlS = median(psqlTimes)
  const peakRssMb = rss.peakMb()
  const pgloader = SETTINGS.pgloader && (await commandAvailable('pgloader')) ? await runPgloader(sql, databaseUrl, files.messy, work, psqlS) : null
  return {
    rows: SETTINGS.rows, bad: { ...files.bad, total: badTotal }, runs: SETTINGS.runs, messyMb: files.messyBytes / 1e6, cleanMb: files.cleanBytes / 1e6,
    gatewayS, psqlS, ratio: gatewayS / psqlS, peakRssMb, gatewayTimes, psqlTimes,
    task: { inserted: details.inserted ?? null, failed: details.failed ?? null, lines: details.lines ?? null, dialect: details.dialect ?? null },
    mismatches, pgloader, met: { ratio: gatewayS / psqlS <= MESSY_TARGETS.ratio, rss: peakRssMb < MESSY_TARGETS.rssMb },
  }
}

export function printMessy(r: MessyResult) {
  const d = r.task.dialect
  console.log(`\nmessy import: ${r.rows.toLocaleString('en-US')} rows (${r.messyMb.toFixed(0)} MB windows-1252 ; CRLF), ${r.bad.total} bad (${r.bad.date} date, ${r.bad.number} number, ${r.bad.duplicate} duplicate key), onError=skip; median of ${r.runs} runs, gateway and psql alternating`)
  console.log(`  detected: ${d ? `${d.encoding}, delimiter ${JSON.stringify(d.delimiter)}, header ${d.header}, line end ${JSON.stringify(d.lineEnding)}` : 'nothing (no task details)'}`)
  console.log(`  task: inserted ${r.task.inserted}, failed ${r.task.failed}; lines ${r.task.lines ? Object.entries(r.task.lines).filter(([, v]) => typeof v === 'number' && v > 0).map(([k, v]) => `${k} ${v}`).join(', ') : '?'}`)
  console.log(`  gateway ${r.gatewayS.toFixed(2)} s (runs ${r.gatewayTimes.map((t) => t.toFixed(2)).join(', ')}), psql \\copy of the clean ${r.cleanMb.toFixed(0)} MB UTF-8 file ${r.psqlS.toFixed(2)} s (runs ${r.psqlTimes.map((t) => t.toFixed(2)).join(', ')})`)
  console.log(`  ratio ${r.ratio.toFixed(2)}, peak RSS ${r.peakRssMb.toFixed(0)} MB`)
  const p = r.pgloader
  console.log(`  pgloader (once, on the messy file): ${!p ? (SETTINGS.pgloader ? 'not installed' : 'skipped (BENCH_PGLOADER=0)') : 'error' in p ? p.error : `${p.seconds.toFixed(2)} s, ratio to psql ${p.ratio.toFixed(2)}, loaded ${p.loaded}, rejected ${p.rejected}${p.note ? `; ${p.note}` : ''}`}`)
  if (r.mismatches.length > 0) console.log(`  MISMATCH: ${r.mismatches.length} check(s) failed, see above; the figures are printed anyway`)
  console.log(`${r.met.ratio && r.met.rss ? 'met   ' : 'MISSED'} messy import: ratio ${r.ratio.toFixed(2)} (target ≤ ${MESSY_TARGETS.ratio}) ${r.met.ratio ? 'met' : 'MISSED'}, peak RSS ${r.peakRssMb.toFixed(0)} MB (target < ${MESSY_TARGETS.rssMb}) ${r.met.rss ? 'met' : 'MISSED'}`)
}

/** Both files in one pass, a few thousand rows at a time: neither is ever whole in memory. */
async function writeFiles(work: string, rows: number): Promise<Files> {
  const messy = path.join(work, 'messy-1252.csv')
  const clean = path.join(work, 'clean-utf8.csv')
  const messyOut = createWriteStream(messy)
  const cleanOut = createWriteStream(clean)
  const bad: Record<BadKind, number> = { date: 0, number: 0, duplicate: 0 }
  let messyText = `${HEADER.join(';')}\r\n`
  let cleanText = `${HEADER.join(',')}\n`
  for (let i = 1; i <= rows; i++) {
    const { values, kind } = messyRow(i)
    messyText += `${values.map((v) => csvField(v, ';')).join(';')}\r\n`
    if (kind) bad[kind]++
    else cleanText += `${values.map((v) => csvField(v, ',')).join(',')}\n`
    if (i % 5000 === 0 || i === rows) {
      await write(messyOut, iconv.encode(messyText, 'windows-1252'))
      await write(cleanOut, cleanText)
      messyText = cleanText = ''
    }
  }
  await Promise.all([new Promise((r) => messyOut.end(r)), new Promise((r) => cleanOut.end(r))])
  return { messy, clean, messyBytes: (await stat(messy)).size, cleanBytes: (await stat(clean)).size, bad }
}

/** Row i: its values and, for one row in 1,000 (the 500th of each thousand), how it is bad. */
function messyRow(i: number): { values: string[]; kind: BadKind | null } {
  const kind = i % 1000 === 500 ? BAD_KINDS[Math.floor(i / 1000) % BAD_KINDS.length]! : null
  const cycle = Math.floor(i / 5000)
  const id = kind === 'duplicate' ? i - 1 : i // the row before is always good: its key is taken
  const amount = kind === 'number' ? BAD_NUMBERS[cycle % BAD_NUMBERS.length]! : ((((i * 7919) % 2_000_000) - 500_000) / 100).toFixed(2)
  const born = kind === 'date' ? BAD_DATES[cycle % BAD_DATES.length]! : new Date(BORN_FROM + ((i * 37) % 25_000) * DAY_MS).toISOString().slice(0, 10)
  const values = [String(id), `${FIRST[i % FIRST.length]} ${LAST[(i * 7) % LAST.length]}`, i % 13 === 0 ? '' : CITIES[(i * 3) % CITIES.length]!,
    amount, born, i % 3 === 0 ? 'false' : 'true', NOTES[i % NOTES.length]!]
  return { values, kind }
}

const csvField = (value: string, delimiter: string) =>
  value.includes(delimiter) || /["\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value

async function write(out: WriteStream, chunk: string | Buffer) {
  if (!out.write(chunk)) await once(out, 'drain')
}

async function importThroughGateway(gateway: GatewayProcess, file: string): Promise<{ s: number; task: Task }> {
  const start = process.hrtime.bigint()
  const res = await gateway.fetch(`/api/datasets/${TABLES.gateway}/imports?onError=skip`, {
    method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: Readable.toWeb(createReadStream(file)) as never, duplex: 'half',
  } as RequestInit)
  if (!res.ok) throw new Error(`the gateway refused the upload: ${res.status} ${await res.text()}`)
  const task = await waitForTask(gateway, ((await res.json()) as { id: string }).id)
  return { s: seconds(start), task }
}

/** What the task must say of this file; each difference is one line. */
function checkTask(task: Task, details: ImportDetails, rows: number, bad: number): string[] {
  if (task.state !== 'succeeded') return [`the task ${task.state}: ${task.error}`]
  const problems: string[] = []
  const d = details.dialect
  if (d?.encoding !== 'windows-1252' || d.delimiter !== ';' || d.header !== true) problems.push(`detected ${JSON.stringify(d && { encoding: d.encoding, delimiter: d.delimiter, header: d.header })}, not windows-1252, ";", header`)
  if (details.inserted !== rows - bad) problems.push(`inserted ${details.inserted}, expected ${rows - bad}`)
  if (details.failed !== bad) problems.push(`failed ${details.failed}, expected ${bad}`)
  const lines = details.lines ?? {}
  const parts = ['sepLine', 'skipped', 'header', 'blank', 'comment', 'footer', 'loaded', 'failed'].reduce((sum, k) => sum + Number(lines[k] ?? 0), 0)
  if (lines.total !== parts) problems.push(`lines: total ${lines.total}, its parts add up to ${parts}`)
  if (lines.total !== rows + 1) problems.push(`lines: total ${lines.total}, the file has ${rows + 1}`)
  if (lines.failed !== bad || lines.loaded !== rows - bad) problems.push(`lines: loaded ${lines.loaded} and failed ${lines.failed}, expected ${rows - bad} and ${bad}`)
  return problems
}

/** pgloader once on the messy file, into its own empty table; bad rows go to its reject file. */
async function runPgloader(sql: postgres.Sql, databaseUrl: string, file: string, work: string, psqlS: number): Promise<Pgloader> {
  const root = path.join(work, 'pgloader')
  await mkdir(root, { recursive: true })
  const url = new URL(databaseUrl)
  url.search = ''
  const command = path.join(root, 'messy.load')
  await writeFile(command, `LOAD CSV
  FROM '${file}' WITH ENCODING windows-1252
    (id, name, city [null if blanks], amount, born, active, note [null if blanks])
  INTO ${url.href}?${TABLES.pgloader}
  WITH skip header = 1, fields optionally enclosed by '"', fields escaped by double-quote, fields terminated by ';';
`)
  console.log('messy: pgloader, once…')
  const start = process.hrtime.bigint()
  try {
    const { stdout, stderr } = await run('pgloader', ['--root-dir', root, command], { maxBuffer: 1 << 26, timeout: SETTINGS.pgloaderCapSeconds * 1000, killSignal: 'SIGKILL' })
    const s = seconds(start)
    await writeFile(path.join(root, 'output.txt'), `${stdout}\n${stderr}`)
    const [{ loaded }] = await sql.unsafe(`select count(*)::int as loaded from ${TABLES.pgloader}`) as unknown as [{ loaded: number }]
    const rejected = await countRejected(root)
    return { seconds: s, ratio: s / psqlS, loaded, rejected, note: `its summary: ${summaryLine(`${stdout}\n${stderr}`)}; output in ${path.relative(process.cwd(), root)}` }
  } catch (err) {
    const e = err as Error & { killed?: boolean }
    return { error: e.killed ? `pgloader stopped after ${SETTINGS.pgloaderCapSeconds} s (BENCH_PGLOADER_CAP_SECONDS)` : `pgloader failed: ${e.message.split('\n').slice(0, 3).join(' | ')}` }
  }
}

/** The rows pgloader wrote to its reject files (`<root>/<database>/<table>.dat`, one row a line). */
async function countRejected(root: string): Promise<number | null> {
  const { stdout } = await run('sh', ['-c', `find '${root}' -name '*.dat' -exec cat {} + | wc -l`])
  return Number(stdout.trim())
}

/** pgloader's own line for the table: errors, rows read, bytes, time. */
const summaryLine = (output: string) =>
  output.split('\n').find((l) => l.includes(TABLES.pgloader) && /\d/.test(l) && !l.includes('LOAD'))?.replace(/\s+/g, ' ').trim() ?? '(not found)'
