import { createReadStream, createWriteStream, type WriteStream } from 'node:fs'
import { once } from 'node:events'
import { Readable, Transform } from 'node:stream'
import { finished } from 'node:stream/promises'
import type { Sql } from '../db/client.ts'
import { createRecordCounter } from './count-records.ts'
import { quoteIdent } from '../datasets/index.ts'
import { isTransient, UserError } from '../errors.ts'
import type { Storage } from '../storage/index.ts'
import { TaskStopped, type ProgressTracker } from '../tasks/progress.ts'
import { completeTask, type TaskRow } from '../tasks/queries.ts'
import { detectDialect, type Dialect } from './dialect.ts'
import { copyIn, copySpooled, mergeStaged, type LoadCounts } from './load.ts'
import { mapColumns, type Mapping } from './mapping.ts'
import type { ImportOptions } from './options.ts'
import { readSamples, type Samples } from './samples.ts'
import { newLineAccount, readRecordBatches, type CsvRecord, type LineAccount } from './read-records.ts'
import { writeErrorReport, type ReportFile } from './report.ts'
import { describeTarget, type Target } from './target.ts'
import { createRowPrecheck, ERRORS, STAGING, validateStaged, type Mapped } from './validate.ts'

export type ImportParams = { uploadId: string; uploadKey: string; fileName: string | null; size: number; options: ImportOptions }

export type ImportSummary = {
  mode: ImportOptions['mode']
  dryRun: boolean
  dialect: Dialect
  columns: (string | null)[]
  rows: number
  inserted: number
  updated: number
  deleted: number
  failed: number
  errors: { line: number; message: string }[]
  /** How every physical line of the file was used; the counts add up to `total`. */
  lines: LineSummary
  /** True when the file went straight to COPY (clean data); false when staged and validated row by row. */
  direct: boolean
}

/**
 * The file's lines by use. `loaded` and `failed` are the lines of records (a quoted
 * multi-line record counts all its lines); `loaded` holds the records that passed, which
 * were not written when the import aborted or was a dry run.
 */
export type LineSummary = {
  total: number; sepLine: number; skipped: number; header: number; blank: number; comment: number; footer: number
  loaded: number; failed: number
  /** Where the lines that are not data are, e.g. "1-6" and "14-17". */
  skippedRange: string | null; footerRange: string | null
}

/** What is known before loading: the mode and the file's reading. */
type SummaryBase = Pick<ImportSummary, 'mode' | 'dryRun' | 'dialect' | 'columns'>

export type ImportOutcome =
  | { state: 'succeeded'; summary: ImportSummary; report: ReportFile | null }
  | { state: 'failed'; summary: ImportSummary; report: ReportFile | null; message: string }

export type ImportContext = {
  session: Sql // a writable session of the import's own
  storage: Storage
  schema: string
  task: TaskRow
  tracker: ProgressTracker
  retentionHours: number
}

const FIRST_ERRORS = 20

/**
 * Loads an uploaded file into its table in one transaction. Clean files of a dialect
 * COPY understands go straight to COPY (as fast as psql's \copy); when COPY rejects
 * anything, or the file needs what COPY cannot do, the file is read again, staged as
 * text, validated set-wise, and every bad row is reported with its original line.
 * A successful import records its own completion inside the same transaction, so
 * a retried task can never load a file twice.
 */
export async function runImport(ctx: ImportContext): Promise<ImportOutcome> {
  const params = ctx.task.params as ImportParams
  const { options } = params
  const target = await describeTarget(ctx.session, ctx.schema, ctx.task.dataset)
  if (!target) throw new UserError('DATASET_NOT_FOUND', `The table "${ctx.task.dataset}" no longer exists or cannot be written.`, 404)
  const filePath = ctx.storage.pathOf(params.uploadKey)
  const samples = await readSamples(filePath)
  const dialect = detect(samples, options)
  const account = newLineAccount()
  const { first, sample, rest } = await openRecords(filePath, dialect, ctx.tracker, params.size, account)
  if (!first) throw new UserError('EMPTY_FILE', 'The file has no rows.', 422)
  const mapping = mapColumns(target, options, first.fields, dialect.header, dialect.renamed, dialect.filled)
  const key = options.key ?? target.primaryKey ?? []
  const base = { mode: options.mode, dryRun: options.dryRun, dialect, columns: mapping.map((c) => c?.name ?? null) }

  // A bad value in the first few thousand rows dooms COPY: go straight to the staged path
  // rather than load until that row, roll back, and read the file a second time.
  if (canCopyDirectly(dialect, mapping, first) && !sampleHasBadRows(mapping, dialect, first, sample)) {
    await rest.return(undefined) // the direct path reads the file itself
    try {
      return await loadDirectly(ctx, target, mapping, dialect, options, key, filePath, params.size, base)
    } catch (err) {
      if (!isDataRejection(err, ctx.tracker.signal)) throw err
      // COPY refused something: read the file again, slowly, to say exactly what and where.
    }
    const againAccount = newLineAccount()
    const again = await openRecords(filePath, dialect, ctx.tracker, params.size, againAccount)
    return loadStaged(ctx, target, mapping, options, key, again.first!, again.sample, again.rest, base, againAccount)
  }
  return loadStaged(ctx, target, mapping, options, key, first, sample, rest, base, account)
}

function sampleHasBadRows(mapping: Mapping, dialect: Dialect, first: CsvRecord, sample: CsvRecord[]): boolean {
  const needsLook = createRowPrecheck(mappedColumns(mapping))
  const rows = dialect.header ? sample : [first, ...sample]
  return rows.some((record) => record.problem !== null || record.fields.length !== mapping.length || needsLook(record))
}

const mappedColumns = (mapping: Mapping): Mapped[] => mapping.flatMap((column, i) => (column ? [{ column, staged: `c${i + 1}` }] : []))

function detect(samples: Samples, options: ImportOptions): Dialect {
  try {
    return detectDialect(samples.head, options.dialect, samples.tail)
  } catch (err) {
    throw new UserError('BAD_DIALECT', (err as Error).message, 422)
  }
}

async function openRecords(file: string, dialect: Dialect, tracker: ProgressTracker, size: number, account: LineAccount) {
  const { progress } = tracker
  const batches = readRecordBatches(createReadStream(file, { highWaterMark: 256 * 1024 }), dialect, {
    account,
    signal: tracker.signal,
    onProgress: (bytes) => {
      progress.bytes = bytes
      progress.percent = size > 0 ? Math.min(99, (bytes / size) * 100) : 0
    },
  })
  try {
    const batch = await batches.next()
    // The first record (the header, usually) decides the mapping; the rest of its batch is the sample.
    const [first = null, ...sample] = batch.done ? [] : batch.value
    return { first, sample, rest: batches }
  } catch (err) {
    throw readError(err)
  }
}

// COPY's own CSV reader takes these; anything else (no quoting, other escapes,
// Excel's sep= line, lone CR line ends, UTF-16) goes through our reader.
const COPY_ENCODINGS: Record<string, string> = { 'utf-8': 'UTF8', 'windows-1252': 'WIN1252', 'iso-8859-1': 'LATIN1', 'iso-8859-7': 'ISO_8859_7' }
const COPY_DELIMITERS: Record<string, string> = { ',': `','`, ';': `';'`, '\t': `E'\\t'`, '|': `'|'` }
const COPY_QUOTES: Record<string, string> = { '"': `'"'`, "'": `''''`, '\\': `'\\'` }

function canCopyDirectly(dialect: Dialect, mapping: Mapping, first: CsvRecord): boolean {
  return dialect.quote !== null && dialect.quote in COPY_QUOTES && (dialect.escape ?? dialect.quote) in COPY_QUOTES
    && dialect.delimiter in COPY_DELIMITERS && dialect.encoding in COPY_ENCODINGS
    && !dialect.sepLine && (dialect.lineEnding === '\n' || dialect.lineEnding === '\r\n')
    && dialect.skipLines === 0 && dialect.footerLines === 0 && dialect.comment === null && dialect.headerLines <= 1
    && mapping.every((c) => c !== null) && first.fields.length === mapping.length
}

async function loadDirectly(ctx: ImportContext, target: Target, mapping: Mapping, dialect: Dialect, options: ImportOptions, key: string[], file: string, size: number, base: SummaryBase): Promise<ImportOutcome> {
  const columns = mapping.map((c) => quoteIdent(c!.name)).join(', ')
  const table = `${quoteIdent(target.schema)}.${quoteIdent(target.name)}`
  // Every option below is a constant from the tables above, never request text.
  const copyOptions = [
    'format csv', `header ${dialect.header}`, `delimiter ${COPY_DELIMITERS[dialect.delimiter]}`,
    `quote ${COPY_QUOTES[dialect.quote!]}`, `escape ${COPY_QUOTES[dialect.escape ?? dialect.quote!]}`,
    `encoding '${COPY_ENCODINGS[dialect.encoding]}'`,
  ].join(', ')
  const counter = createRecordCounter(dialect.quote!.charCodeAt(0), dialect.delimiter.charCodeAt(0), dialect.multilineRecords ? Infinity : RUNAWAY_QUOTE_LINES)
  const { progress } = ctx.tracker
  let skipBom = dialect.bom && dialect.encoding === 'utf-8'
  const measured = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      if (skipBom) {
        chunk = chunk.subarray(3)
        skipBom = false
      }
      counter.push(chunk)
      progress.bytes += chunk.length
      progress.rows = Math.max(0, counter.records() - (dialect.header ? 1 : 0))
      progress.percent = size > 0 ? Math.min(99, (progress.bytes / size) * 100) : 0
      done(null, chunk)
    },
  })
  progress.bytes = 0
  const mapped = mapping.map((column, i) => ({ column: column!, staged: `c${i + 1}` }))
  return inTransaction(ctx, options, async (tx) => {
    const source = createReadStream(file, { highWaterMark: 256 * 1024 }).pipe(measured)
    let counts: LoadCounts
    if (options.mode === 'upsert' || target.checksAtStatementEnd || target.rowSecurity) {
      // Typed, constraint-free temp table first; the merge is then one ordinary statement.
      await tx.unsafe(`create temp table ${STAGING} on commit drop as select ${mapping.map((c, i) => `${quoteIdent(c!.name)} as c${i + 1}`).join(', ')} from ${table} with no data`)
      await tx.unsafe(`alter table ${STAGING} add column line int`)
      await tx.unsafe(`create temp table ${ERRORS} (line int, message text) on commit drop`)
      await copyIn(tx, `copy ${STAGING} (${mapped.map((m) => m.staged).join(', ')}) from stdin with (${copyOptions})`, source, ctx.tracker.signal)
      counts = await mergeStaged(tx, target, mapped, options.mode, key)
    } else {
      const deleted = options.mode === 'replace' ? (await tx.unsafe(`delete from ${table}`)).count : 0
      await copyIn(tx, `copy ${table} (${columns}) from stdin with (${copyOptions})`, source, ctx.tracker.signal)
      counts = { inserted: Math.max(0, counter.records() - (dialect.header ? 1 : 0)), updated: 0, deleted }
    }
    // COPY loads a blank or delimiter-only line as a row of NULLs and a runaway quote as one
    // glued row; our reader skips the one and stops at the other: let it read the file.
    if (counter.blankLines() > 0 || counter.runawayQuote()) throw Object.assign(new Error('the file needs the reader'), { code: 'NEEDS_READER' })
    const rows = Math.max(0, counter.records() - (dialect.header ? 1 : 0))
    const total = counter.lines()
    const header = dialect.header ? 1 : 0
    const lines = summarizeLines({ ...newLineAccount(), total, header, records: rows, recordLines: total - header }, 0, dialect)
    return { summary: { ...base, rows, ...counts, failed: 0, errors: [], lines, direct: true }, report: null }
  })
}

async function loadStaged(ctx: ImportContext, target: Target, mapping: Mapping, options: ImportOptions, key: string[], first: CsvRecord, sample: CsvRecord[], rest: AsyncGenerator<CsvRecord[]>, base: SummaryBase, account: LineAccount): Promise<ImportOutcome> {
  const width = mapping.length
  const unnamed = (mapping.unnamed ?? []).map((i) => ({ index: i, name: base.dialect.columnNames[i] ?? `column_${i + 1}` }))
  const mapped = mappedColumns(mapping)
  const header = base.dialect.header ? first.fields : mapping.map((c, i) => c?.name ?? `column ${i + 1}`)
  const needsLook = createRowPrecheck(mapped)
  // Inserts and replaces COPY the valid rows from a spool file written while staging: COPY loads
  // about twice as fast as INSERT ... SELECT. Upserts need ON CONFLICT; checks at statement end
  // would be raised after COPY's last row, and row-level security refuses COPY (see Target):
  // those merge from staging.
  const spoolPath = options.mode !== 'upsert' && !target.checksAtStatementEnd && !target.rowSecurity ? ctx.storage.newTempPath() : null
  // A few MB in flight: waiting for each write to reach the disk held the reader up by a third.
  const spool = spoolPath ? createWriteStream(spoolPath, { highWaterMark: 8 << 20 }) : null
  // A write error (a full disk) can come between two writes: kept, and thrown by the next one.
  let spoolError: Error | null = null
  spool?.on('error', (err) => { spoolError = err })
  const spooledIndexes = mapped.map((m) => Number(m.staged.slice(1)) - 1)
  let rows = 0
  const { progress } = ctx.tracker

  function stage(records: CsvRecord[]): { staged: string; spooled: string } {
    let staged = ''
    let spooled = ''
    for (const record of records) {
      const problem = problemOf(record, width, unnamed)
      const flagged = problem !== null || needsLook(record)
      const values = copyValues(record, width, null)
      staged += `${record.line}\t${record.lines === 1 ? '\\N' : record.lines}\t${problem === null ? '\\N' : escapeCopy(problem)}\t${flagged ? 't' : 'f'}${values}\n`
      // A row with a problem of its own fails whatever SQL says: it is never loaded.
      if (spool && problem === null) spooled += `${record.line}${spooledIndexes.length === width ? values : copyValues(record, width, spooledIndexes)}\n`
    }
    rows += records.length
    progress.rows = rows
    return { staged, spooled }
  }

  async function* stagedLines(): AsyncGenerator<string> {
    try {
      const leading = base.dialect.header ? sample : [first, ...sample]
      for (let batch: CsvRecord[] | null = leading; batch !== null; batch = await nextBatch()) {
        const { staged, spooled } = stage(batch)
        if (spoolError) throw spoolError
        if (spool && spooled) await write(spool, spooled)
        if (staged) yield staged
      }
      if (spool) await finished(spool.end())
    } catch (err) {
      throw readError(err)
    } finally {
      await rest.return(undefined) // a COPY that failed midway stops reading the file too
    }
  }
  async function nextBatch(): Promise<CsvRecord[] | null> {
    const next = await rest.next()
    return next.done ? null : next.value
  }

  try {
    return await inTransaction(ctx, options, async (tx) => {
      await tx.unsafe(`create temp table ${STAGING} (line int not null, lines int, ragged text, flagged bool not null, ${Array.from({ length: width }, (_, i) => `c${i + 1} text`).join(', ')}) on commit drop`)
      await tx.unsafe(`create temp table ${ERRORS} (line int not null, message text not null) on commit drop`)
      // Two batches queued keep PostgreSQL busy; more only hold their records' text in memory.
      await copyIn(tx, `copy ${STAGING} from stdin`, Readable.from(stagedLines(), { highWaterMark: 2 }), ctx.tracker.signal)
      await tx.unsafe(`analyze ${STAGING}`)
      ctx.tracker.signal.throwIfAborted()
      await validateStaged(tx, target, mapped, options.mode, key)
      ctx.tracker.signal.throwIfAborted()
      const [{ failed, failedLines }] = (await tx.unsafe(`
        select count(*)::int as failed, coalesce(sum(coalesce(s.lines, 1)), 0)::int as "failedLines"
        from ${STAGING} s where exists (select 1 from ${ERRORS} e where e.line = s.line)`)) as unknown as [{ failed: number; failedLines: number }]
      const errors = (await tx.unsafe(`select line, string_agg(message, '; ' order by message) as message from ${ERRORS} group by line order by line limit ${FIRST_ERRORS}`)) as unknown as { line: number; message: string }[]
      const report = failed > 0 ? await writeErrorReport(tx, ctx.storage, ctx.task.dataset, header, width) : null
      const loads = failed === 0 || options.onError === 'skip'
      const load = () => spoolPath ? copySpooled(tx, target, mapped, options.mode, spoolPath, ctx.tracker.signal) : mergeStaged(tx, target, mapped, options.mode, key)
      const counts = loads ? await load().catch(explainHiddenConflict) : { inserted: 0, updated: 0, deleted: 0 }
      const lines = summarizeLines(account, failedLines, base.dialect)
      const summary: ImportSummary = { ...base, rows, ...counts, failed, errors: errors.map((e) => ({ ...e })), lines, direct: false }
      if (!loads) {
        const message = `${failed.toLocaleString('en-US')} of ${rows.toLocaleString('en-US')} rows have errors, so nothing was imported (onError=abort). ` +
          `First: line ${errors[0]!.line}, ${errors[0]!.message}. Download the error report, fix those rows and upload again, or import with onError=skip.`
        return { summary, report, failure: message }
      }
      return { summary, report }
    })
  } finally {
    spool?.destroy()
    if (spoolPath) await ctx.storage.remove(spoolPath)
  }
}

async function write(out: WriteStream, text: string) {
  if (!out.write(text)) await once(out, 'drain')
}

/**
 * Runs the load in one transaction. A dry run rolls back; a failure rolls back and
 * is returned; a success records the task's completion before the commit.
 */
async function inTransaction(ctx: ImportContext, options: ImportOptions, load: (tx: Sql) => Promise<{ summary: ImportSummary; report: ReportFile | null; failure?: string }>): Promise<ImportOutcome> {
  let outcome: ImportOutcome | null = null
  try {
    await ctx.session.begin(async (tx) => {
      // The load runs as the requester's role, so its grants, triggers' checks and row-level
      // security apply; recording the outcome in sluice.tasks is the gateway's own business.
      if (ctx.task.runAsRole !== null) await tx`select set_config('role', ${ctx.task.runAsRole}, true)`
      const result = await load(tx as unknown as Sql)
      // Deferred constraint triggers would otherwise run at COMMIT, after the role is reset,
      // as the gateway's own user: run them now, still as the role (an audit trigger records
      // the requester). Nothing the role wrote is checked after this.
      if (!result.failure) await tx`set constraints all immediate` // a dry run, too: it must meet the same checks
      if (ctx.task.runAsRole !== null) await tx`reset role`
      if (result.failure) {
        outcome = { state: 'failed', summary: result.summary, report: result.report, message: result.failure }
        throw ROLLBACK
      }
      outcome = { state: 'succeeded', summary: result.summary, report: result.report }
      if (options.dryRun) throw ROLLBACK
      const recorded = await completeTask(tx as unknown as Sql, ctx.task.id, ctx.task.runId!, {
        key: result.report?.key ?? null, name: result.report?.name ?? null, size: result.report?.size ?? null, sha256: result.report?.sha256 ?? null,
        retentionHours: ctx.retentionHours, rows: result.summary.rows, bytes: ctx.tracker.progress.bytes, details: result.summary,
      })
      if (!recorded) throw new TaskStopped('lost') // rolls the data back: the task is someone else's now
    })
  } catch (err) {
    if (err !== ROLLBACK) throw err
  }
  return outcome!
}

const ROLLBACK = Symbol('rollback')

/**
 * Validation found no taken key, yet the insert met one: a row the role cannot see (row-level
 * security) holds it, since PostgreSQL checks unique keys against every row. Say so, with the
 * key as the file wrote it (PostgreSQL's detail names only that), and nothing of the row.
 */
function explainHiddenConflict(err: unknown): never {
  const { code, detail, constraint_name: constraint } = err as { code?: string; detail?: string; constraint_name?: string }
  if (code !== '23505') throw err
  throw new UserError('KEY_EXISTS', `A key in the file already exists in a row you may not see (row-level security hides it; ` +
    `PostgreSQL checks keys against every row)${detail ? `: ${detail.replace(/\.$/, '')}` : ''}${constraint ? `, constraint ${constraint}` : ''}. Nothing was imported.`, 409)
}

const RUNAWAY_QUOTE_LINES = 100 // as the reader's limit (read-records.ts)

function summarizeLines(account: LineAccount, failedLines: number, dialect: Dialect): LineSummary {
  const range = (from: number, count: number) => (count === 0 ? null : count === 1 ? `${from}` : `${from}-${from + count - 1}`)
  return {
    total: account.total, sepLine: account.sepLine, skipped: account.skipped, header: account.header,
    blank: account.blank, comment: account.comment, footer: account.footer,
    loaded: account.recordLines - failedLines, failed: failedLines,
    skippedRange: range(account.sepLine + 1, account.skipped),
    footerRange: range(account.total - account.footer + 1, account.footer),
  }
}

/** Why a record cannot load whatever its values say: undecodable bytes, its width, a NUL, a value with nowhere to go. */
function problemOf(record: CsvRecord, width: number, unnamed: { index: number; name: string }[]): string | null {
  if (record.problem !== null) return record.problem
  const { fields } = record
  if (fields.length !== width) return `has ${fields.length} fields where the header has ${width}`
  // A NUL cannot be staged (PostgreSQL text refuses it, failing the whole COPY): the row is
  // marked bad like a ragged one, and staged without its NULs for the error report.
  const nul = record.raw.includes('\0') ? fields.findIndex((value, i) => i < width && value.includes('\0')) : -1
  if (nul >= 0) return `field ${nul + 1} holds a NUL character (byte 0x00), which PostgreSQL cannot store in text`
  const orphan = unnamed.find((u) => (fields[u.index] ?? '') !== '')
  if (orphan) return `${orphan.name} has a value ("${fields[orphan.index]!.slice(0, 40)}") but no header and no column of the table to go to: name it in the file, or map it with columns= (empty to skip it on purpose)`
  return null
}

/**
 * The record's values (all `width` of them, or those at `indexes`) in COPY's text format, each
 * after a tab: \N for NULL (an empty unquoted field, as in COPY's CSV), backslash escapes.
 */
function copyValues(record: CsvRecord, width: number, indexes: number[] | null): string {
  const { fields, quotedEmpty } = record
  // The raw text holds every character of the values: one test instead of one per value.
  const plain = record.lines === 1 && !NEEDS_ESCAPE_OR_NUL.test(record.raw)
  // The common row: every field there, none empty, nothing to escape; join is native.
  if (plain && indexes === null && fields.length === width && !fields.includes('')) return `\t${fields.join('\t')}`
  let text = ''
  const count = indexes ? indexes.length : width
  for (let k = 0; k < count; k++) {
    const i = indexes ? indexes[k]! : k
    let value = fields[i]
    if (value === undefined || (value === '' && !quotedEmpty.includes(i))) {
      text += '\t\\N'
      continue
    }
    if (!plain) value = escapeCopy(value.includes('\0') ? value.replaceAll('\0', '') : value)
    text += `\t${value}`
  }
  return text
}

const NEEDS_ESCAPE_OR_NUL = /[\\\t\n\r\0]/
const NEEDS_ESCAPE = /[\\\t\n\r]/
const escapeCopy = (value: string) =>
  NEEDS_ESCAPE.test(value) ? value.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r')) : value

/** Errors the file itself causes (encoding, quoting, sizes) are the user's to fix. */
function readError(err: unknown): unknown {
  const code = (err as { code?: string }).code
  if (code && ['INVALID_ENCODING', 'MALFORMED_CSV', 'FIELD_TOO_LARGE', 'TOO_MANY_FIELDS'].includes(code)) {
    return new UserError(code, (err as Error).message, 422)
  }
  return err
}

/** COPY said no to the data (a type, a key, a quote): the staged path can say where. */
function isDataRejection(err: unknown, signal: AbortSignal): boolean {
  if (signal.aborted || err instanceof TaskStopped || isTransient(err)) return false
  const code = (err as { code?: string }).code ?? ''
  if (code === 'NEEDS_READER') return true
  if (code === '42501') return false // a missing grant: reading the file again would not help
  return /^(22|23|21|42|25P)/.test(code) || code === '0A000'
}
