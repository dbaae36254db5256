// `node --import tsx bench/tokenizer.ts`: CSV tokenizing speed on decoded text, without I/O:
// csv-parse with the options read-records.ts gives it (alone, and behind the stream pipeline
// parseText builds), the old per-character tokenizer (test/support/reference-tokenizer.ts), and src/imports/tokenizer.ts.
// The text is realistic (`;`, CRLF, decimal commas, dates, accents, some quoted fields with
// `;` and doubled quotes) and fed in 64 KiB chunks as the decoder yields them; a pool of
// distinct chunks is cycled so memory stays bounded. MB = 10^6 characters of decoded text
// (one byte each for windows-1252).
// BENCH_MB (default 200) per run, BENCH_RUNS (3; the best is shown), BENCH_ONLY=new,old,... picks;
// csv-parse is slow enough to run once on BENCH_SLOW_MB (default 34: two pool cycles).
import { pipeline, Readable } from 'node:stream'
import { parse, type CastingContext, type Options } from 'csv-parse'
import { createTokenizer as createOldTokenizer } from '../test/support/reference-tokenizer.ts'
import { createTokenizer } from '../src/imports/tokenizer.ts'

const TOTAL_MB = Number(process.env.BENCH_MB ?? 200)
const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const SLOW_MB = Number(process.env.BENCH_SLOW_MB ?? Math.min(TOTAL_MB, 34)) // csv-parse runs at ~2 MB/s: once, on less
const ONLY = process.env.BENCH_ONLY?.split(',') ?? null
const CHUNK = 64 * 1024
const POOL_CHARS = 16 * 2 ** 20 // distinct text, cycled until TOTAL_MB is fed
// What read-records.ts uses: READ_DEFAULTS, and RUNAWAY_QUOTE_LINES for a file without multi-line records.
const LIMITS = { maxFieldBytes: 16 * 1024 * 1024, maxFields: 10_000, maxRecordLines: 100 }
const QUOTING = { delimiter: ';', quote: '"', escape: '"' }
const QUOTED_EMPTY = Object.freeze({ quotedEmpty: true })

type Dataset = { name: string; chunks: string[] }
type Result = { dataset: string; parser: string; mbPerS: number; records: number }

type Parser = { run: (chunks: Iterable<string>) => Promise<number>; slow?: boolean }
const parsers: Record<string, Parser> = {
  'csv-parse (parseText pipeline)': { run: (chunks) => csvParsePipeline(chunks), slow: true },
  'csv-parse (parser alone)': { run: (chunks) => csvParseAlone(chunks, true), slow: true },
  'csv-parse (parser alone, no cast)': { run: (chunks) => csvParseAlone(chunks, false), slow: true },
  'old createTokenizer': { run: async (chunks) => tokenize(createOldTokenizer(QUOTING, LIMITS), chunks, 0) },
  'new tokenizer': { run: async (chunks) => tokenize(createTokenizer(QUOTING, LIMITS), chunks, 0) },
  // A consumer that holds records a while (a COPY batch): V8 must not start pretenuring them.
  'new tokenizer, 50k records kept': { run: async (chunks) => tokenize(createTokenizer(QUOTING, LIMITS), chunks, 50_000) },
}

function tokenize(tokenizer: { push(text: string): unknown[]; end(): unknown[] }, chunks: Iterable<string>, keep: number): number {
  const kept: unknown[] = new Array(keep)
  let n = 0
  const take = (records: unknown[]) => {
    if (keep > 0) for (const r of records) kept[(n++) % keep] = r
    else n += records.length
  }
  for (const chunk of chunks) take(tokenizer.push(chunk))
  take(tokenizer.end())
  return n
}

async function main() {
  const datasets: Dataset[] = [
    { name: 'mixed: ~10% of text fields quoted', chunks: pool((r) => row(r, 0.1)) },
    { name: 'every text field quoted', chunks: pool((r) => row(r, 1)) },
  ]
  checkAgreement(datasets[0]!.chunks.slice(0, 16))
  const results: Result[] = []
  for (const dataset of datasets) {
    const chars = dataset.chunks.reduce((n, c) => n + c.length, 0)
    const cyclesFor = (mb: number) => Math.max(1, Math.round((mb * 1e6) / chars))
    console.log(`\n${dataset.name}: ${(chars * cyclesFor(TOTAL_MB) / 1e6).toFixed(0)} MB per run ` +
      `(${(chars / 1e6).toFixed(1)} MB pool × ${cyclesFor(TOTAL_MB)}; csv-parse ${(chars * cyclesFor(SLOW_MB) / 1e6).toFixed(0)} MB, one run)`)
    const best = new Map<string, { mbPerS: number; records: number }>()
    for (let run = 0; run < RUNS; run++) {
      for (const [name, parser] of Object.entries(parsers)) {
        if (ONLY && !ONLY.some((o) => name.includes(o))) continue
        if (parser.slow && run > 0) continue
        const cycles = cyclesFor(parser.slow ? SLOW_MB : TOTAL_MB)
        const started = process.hrtime.bigint()
        const records = await parser.run(cycled(dataset.chunks, cycles))
        const seconds = Number(process.hrtime.bigint() - started) / 1e9
        const mbPerS = (chars * cycles) / 1e6 / seconds
        if (!best.has(name) || best.get(name)!.mbPerS < mbPerS) best.set(name, { mbPerS, records })
        console.log(`  run ${run + 1} ${name.padEnd(34)} ${mbPerS.toFixed(1).padStart(7)} MB/s  ${seconds.toFixed(2)} s  ${records} records`)
      }
    }
    for (const [parser, { mbPerS, records }] of best) results.push({ dataset: dataset.name, parser, mbPerS, records })
  }

  console.log('\nbest of runs (MB/s of decoded text):')
  for (const dataset of datasets) {
    const rows = results.filter((r) => r.dataset === dataset.name)
    const base = rows.find((r) => r.parser === 'csv-parse (parseText pipeline)')?.mbPerS
    console.log(`  ${dataset.name}`)
    for (const r of rows) console.log(`    ${r.parser.padEnd(34)} ${r.mbPerS.toFixed(1).padStart(7)} MB/s${base ? `  ×${(r.mbPerS / base).toFixed(1)} csv-parse as read-records runs it` : ''}`)
  }
}

// ---- parsers ----

function csvParseOptions(onSkip: (failure: unknown) => void): Options {
  return {
    delimiter: QUOTING.delimiter,
    quote: QUOTING.quote,
    escape: QUOTING.quote,
    record_delimiter: ['\r\n', '\n', '\r'],
    relax_column_count: true,
    relax_quotes: true,
    raw: true,
    cast: (value: string, context: CastingContext) => (value === '' && context.quoting ? (QUOTED_EMPTY as unknown as string) : value),
    max_record_size: LIMITS.maxFieldBytes,
    ignore_last_delimiters: LIMITS.maxFields + 1,
    skip_records_with_error: true,
    on_skip: (failure) => { onSkip(failure); return undefined },
  }
}

/** The parser's own work: chunks written in, records taken as they come out. */
function csvParseAlone(chunks: Iterable<string>, cast: boolean): Promise<number> {
  return new Promise((resolve, reject) => {
    let n = 0
    const options = csvParseOptions(() => { throw new Error('unexpected failure') })
    if (!cast) delete options.cast // what the cast callback costs: a context object per field
    const parser = parse(options)
    parser.on('data', () => { n++ })
    parser.on('error', reject)
    parser.on('end', () => resolve(n))
    for (const chunk of chunks) parser.write(chunk)
    parser.end()
  })
}

/** As read-records.ts runs it: an async text stream piped in, records read in batches. */
async function csvParsePipeline(chunks: Iterable<string>): Promise<number> {
  async function* text() { yield* chunks }
  const parser = parse(csvParseOptions((failure) => { parser.push({ failure }) }))
  pipeline(Readable.from(text()), parser, () => {})
  let n = 0
  for await (const first of parser) {
    const batch = [first]
    for (let item = parser.read(); item !== null; item = parser.read()) batch.push(item)
    n += batch.length
  }
  return n
}

/** The three read the bench's text the same (csv-parse differs on stray quotes, which it has none of). */
function checkAgreement(chunks: string[]) {
  const fresh = createTokenizer(QUOTING, LIMITS)
  const old = createOldTokenizer(QUOTING, LIMITS)
  const a = chunks.flatMap((c) => fresh.push(c)).concat(fresh.end())
  const b = chunks.flatMap((c) => old.push(c)).concat(old.end())
  if (a.length !== b.length || a.some((r, i) => r.fields.join('\u0000') !== b[i]!.record.join('\u0000'))) throw new Error('the tokenizers disagree on the bench text')
}

// ---- data ----

function* cycled(chunks: string[], cycles: number): Generator<string> {
  for (let c = 0; c < cycles; c++) yield* chunks
}

/** POOL_CHARS of rows cut into CHUNK-sized pieces (cutting records and \r\n anywhere); ends at a record end. */
function pool(makeRow: (rand: () => number) => string): string[] {
  const rand = mulberry32(1252)
  const parts: string[] = ['id;sku;name;city;qty;price;amount;date;updated;active;comment\r\n']
  let length = parts[0]!.length
  while (length < POOL_CHARS) {
    const r = makeRow(rand)
    parts.push(r)
    length += r.length
  }
  const text = parts.join('')
  const chunks: string[] = []
  for (let at = 0; at < text.length; at += CHUNK) chunks.push(text.slice(at, at + CHUNK))
  return chunks.map((c) => Buffer.from(c).toString()) // flat strings, as a decoder gives, not slices of one big text
}

function row(rand: () => number, quoteShare: number): string {
  const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)]!
  const text = (value: string) => {
    if (rand() >= quoteShare) return value.replaceAll(';', ',').replaceAll('"', '')
    return `"${value.replaceAll('"', '""')}"`
  }
  const money = () => `${Math.floor(rand() * 100000)},${String(Math.floor(rand() * 100)).padStart(2, '0')}`
  const date = () => `${String(1 + Math.floor(rand() * 28)).padStart(2, '0')}.${String(1 + Math.floor(rand() * 12)).padStart(2, '0')}.${2015 + Math.floor(rand() * 10)}`
  const fields = [
    String(nextId++),
    `SKU-${Math.floor(rand() * 1e6).toString(36).toUpperCase()}`,
    text(pick(NAMES) + ' ' + pick(SURNAMES)),
    text(pick(CITIES)),
    String(Math.floor(rand() * 500)),
    money(),
    rand() < 0.05 ? '' : money(),
    date(),
    `${date()} ${String(Math.floor(rand() * 24)).padStart(2, '0')}:${String(Math.floor(rand() * 60)).padStart(2, '0')}:00`,
    rand() < 0.5 ? 'ja' : 'nein',
    rand() < 0.3 ? '' : text(pick(COMMENTS)),
  ]
  return fields.join(';') + '\r\n'
}

const NAMES = ['Jürgen', 'Anaïs', 'François', 'Zoë', 'Björn', 'Ana', 'Łukasz', 'Mårten', 'Émile', 'Ines', 'José']
const SURNAMES = ['Müller', 'Søndergaard', "O'Neill", 'García', 'Dvořák', 'Weiß', 'Lefèvre', 'van der Berg']
const CITIES = ['München', 'Zürich', 'Köln', 'Besançon', 'Málaga', 'Göteborg', 'Łódź', 'Saint-Étienne']
const COMMENTS = [
  'Lieferung verspätet; Kunde informiert',
  'Rabatt 15 % gewährt',
  'sagte "bitte schnell"; Rückruf vereinbart',
  'Größe "XL" statt "L" geliefert',
  'ok',
  'Rückgabe wegen Defekt (Gehäuse gebrochen) – Ersatz 12,50 € erstattet',
  'Zahlung per Überweisung; Referenz 2024/117',
]

let nextId = 1

function mulberry32(seed: number) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

await main()
