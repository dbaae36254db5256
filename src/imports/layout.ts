// Where the table is in a file: the lines before it (titles, filter notes, blank and
// delimiter-padded lines), the header line(s) or none, comment lines, and the footer after
// the data (notes, totals, sources). Pure: it reads decoded sample text, never the file.
// Decided from the structure of the rows, as CleverCSV's and messytables' header guessing
// do: field counts, how many cells are filled, where cells turn from text into numbers and
// dates, blank-line separated blocks. Every decision comes with its reason in a sentence.

export type FooterChoice = 'auto' | 'none' | number

/** What the user chose: each one wins over detection. */
export type LayoutOverrides = {
  skipLines?: number
  header?: boolean
  headerLines?: 1 | 2
  skipFooter?: FooterChoice
  comment?: string | null
}

export type Layout = {
  /** Physical lines before the header (or the first record), not counting an Excel sep= line. */
  skipLines: number
  header: boolean
  /** 2: a two-line header, joined cell by cell ("Population" over "2022" reads "Population 2022"). */
  headerLines: 0 | 1 | 2
  /** Physical lines at the end of the file that are not data. */
  footerLines: number
  comment: string | null
  /** The table's width: the header's or the records', whichever is wider. */
  width: number
  /** One clear name per column: the header's, or column_N where it is empty, repeated or too long. */
  columnNames: string[]
  /** Positions (0-based) whose header cell was empty, repeated or over 63 bytes: mapped by position. */
  renamed: number[]
  /** Whether each column has a value in some row of the sample. */
  filled: boolean[]
  reasons: string[]
}

export type SampleRecord = { fields: string[]; line: number; lines: number } // lines: physical lines it spans
export type Tokenize = (text: string) => SampleRecord[]

const MAX_PREAMBLE_LINES = 60
const RUN_TO_CONFIRM = 3 // records of the table's width that must follow a header candidate
const MAX_TOTAL_ROWS = 3 // table-shaped rows after a blank separator that still count as footer
const MAX_NAME_BYTES = 63 // PostgreSQL's identifier limit
const TOTAL = /^(?:grand\s+)?(?:total|totals|sum|summe|gesamt|insgesamt|totaal|totale|suma|итого|всего)\b/i

export const NUMBER = /^[-+]?[$€£¥]?(?=[.,]?\d)(?:\d+|\d{1,3}(?:[,.' ]\d{3})+)?(?:[.,]\d+)?(?:[eE][-+]?\d+)?%?$/
export const DATE = /^(?:\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?|\d{1,2}:\d{2}(?::\d{2})?)$/
const HEADER_SAMPLE_ROWS = 100

/**
 * `head` is the decoded start of the file (after a sep= line), `tail` its decoded end when
 * the file is larger than the head (null: the head is the whole file). `tokenize` reads
 * text with the file's delimiter and quoting.
 */
export function detectLayout(head: string, tail: string | null, tokenize: Tokenize, overrides: LayoutOverrides = {}): Layout {
  const reasons: string[] = []
  const comment = overrides.comment !== undefined ? overrides.comment : detectComment(head, tokenize)
  if (overrides.comment === undefined && comment) reasons.push(`lines starting with "${comment}" are comments: they appear among the rows with another shape`)
  const all = withoutComments(tokenize(head), head, comment)
  const records = all.filter((r) => !isBlank(r))
  const width = tableWidth(records)

  const skipLines = overrides.skipLines ?? findTableStart(head, tokenize, width, comment, reasons)
  const body = records.filter((r) => r.line > skipLines)
  const first = body[0]
  let header = overrides.header ?? (first ? detectHeader(body.map((r) => r.fields)) : true)
  if (overrides.header === undefined && first) {
    reasons.push(header
      ? `line ${first.line} is the header: ${headerWhy(body.map((r) => r.fields))}`
      : `line ${first.line} is data, not a header: its cells have the same types as the rows below`)
  }
  let headerLines: 0 | 1 | 2 = header ? 1 : 0
  if (header && overrides.headerLines === 2 && body.length >= 2) headerLines = 2
  else if (header && overrides.headerLines === undefined && body.length > 2 && isSecondHeaderLine(body)) {
    headerLines = 2
    reasons.push(filledCount(first!.fields) === first!.fields.length
      ? `line ${body[1]!.line} holds units or notes under the header (text where the rows below have numbers): part of the header, the names are line ${first!.line}'s (headerLines=1 reads it as data)`
      : `lines ${first!.line}-${body[1]!.line} are a two-line header, joined cell by cell (headerLines=1 keeps the second line alone)`)
  }
  if (!first) header = overrides.header ?? true

  const footerLines = chooseFooter(overrides.skipFooter, tail, head, tokenize, width, comment, body, reasons)
  const headerRow = headerLines === 2 ? joinHeader(body[0]!.fields, body[1]!.fields) : headerLines === 1 ? first?.fields ?? [] : []
  const names = nameColumns(headerRow, Math.max(width, headerRow.length, first?.fields.length ?? 0))
  if (names.renamed.length > 0) {
    reasons.push(`column(s) ${names.renamed.map((i) => i + 1).join(', ')} have an empty, repeated or over-long header cell: named ${names.renamed.map((i) => names.names[i]).join(', ')}, mapped by position`)
  }
  const rows = body.slice(headerLines)
  const filled = names.names.map((_, i) => rows.some((r) => (r.fields[i] ?? '').trim() !== ''))
  return { skipLines, header, headerLines, footerLines, comment, width: names.names.length, columnNames: names.names, renamed: names.renamed, filled, reasons }
}

/** A record with nothing in it: an empty line, or only delimiters (spreadsheets pad rows so). */
export function isBlank(record: { fields: string[] }): boolean {
  return record.fields.every((f) => f.trim() === '')
}

function filledCount(fields: string[]): number {
  let n = 0
  for (const f of fields) if (f.trim() !== '') n++
  return n
}

/** The most common field count among rows with two or more filled cells (titles have one). */
function tableWidth(records: SampleRecord[]): number {
  const counts = new Map<number, number>()
  const rich = records.filter((r) => filledCount(r.fields) >= 2)
  for (const r of rich.length > 0 ? rich : records) counts.set(r.fields.length, (counts.get(r.fields.length) ?? 0) + 1)
  let best = 1
  let bestCount = 0
  for (const [width, n] of counts) if (n > bestCount || (n === bestCount && width > best)) [best, bestCount] = [width, n]
  return best
}

/**
 * The first line that starts a run of records of the table's width is the table's start;
 * the lines above it (titles padded with delimiters, notes, blank lines) are skipped.
 * Lines are read one by one here, so a stray quote in a title cannot swallow the table.
 */
function findTableStart(head: string, tokenize: Tokenize, width: number, comment: string | null, reasons: string[]): number {
  if (width < 2) return 0
  const byRecord = withoutComments(tokenize(head), head, comment)
  const found = tableStartIn(byRecord.map((r) => ({ fields: r.fields, line: r.line })), width)
    // A stray quote in a title can glue lines into one record: then read line by line.
    ?? tableStartIn(physicalLines(head).slice(0, MAX_PREAMBLE_LINES + RUN_TO_CONFIRM + 1).flatMap((text, i) =>
      comment && text.startsWith(comment) ? [] : [{ fields: tokenize(text)[0]?.fields ?? [''], line: i + 1 }]), width)
  if (!found || found.line === 1) return 0
  // Comment lines just above the header are left to the reader, which counts them as comments.
  const lines = physicalLines(head)
  let before = found.line - 1
  while (before > 0 && comment && lines[before - 1]!.startsWith(comment)) before--
  if (before === 0) return 0
  if (before < found.line - 1) return before
  reasons.push(`line${found.line > 2 ? `s 1-${found.line - 1}` : ' 1'} look${found.line > 2 ? '' : 's'} like a title block: ${describeSkipped(found.skipped)}`)
  return found.line - 1
}

function tableStartIn(rows: { fields: string[]; line: number }[], width: number): { line: number; skipped: string[][] } | null {
  const half = Math.ceil(width / 2)
  for (let i = 0; i < rows.length && rows[i]!.line <= MAX_PREAMBLE_LINES; i++) {
    const row = rows[i]!.fields
    const filled = filledCount(row)
    if (filled < 2 || row.length < half) continue
    // Rows of the table's width and two filled cells or more must follow (a padded
    // "Stichtag:;31.12.2022;;;" has the width but not the company).
    const next = rows.slice(i + 1).map((r) => r.fields).filter((r) => filledCount(r) > 0).slice(0, RUN_TO_CONFIRM)
    const matching = next.filter((r) => r.length === width && filledCount(r) >= 2).length
    const runFollows = next.length > 0 && matching * 3 >= next.length * 2
    const looksFull = row.length === width && filled >= half
    if (!runFollows && !(looksFull && (next.length === 0 || matching > 0))) continue
    return { line: rows[i]!.line, skipped: rows.slice(0, i).map((r) => r.fields) }
  }
  return null
}

function describeSkipped(rows: string[][]): string {
  if (rows.length === 0) return 'blank lines'
  const kinds = new Set(rows.map((r) => (filledCount(r) === 0 ? 'blank' : filledCount(r) === 1 ? 'one filled cell' : 'another width')))
  return [...kinds].join(', ').replace(/^one filled cell$/, 'one filled cell each')
}

/** Splits text into physical lines (without their breaks); a last line cut by the sample is kept. */
export function physicalLines(text: string): string[] {
  const lines = text.split(/\r\n|\r|\n/)
  if (lines.at(-1) === '') lines.pop()
  return lines
}

/**
 * `#` lines are comments when one of them sits among the rows with another shape than
 * the table's (a note between records), never from the top lines alone: a title is not a comment.
 */
function detectComment(head: string, tokenize: Tokenize): string | null {
  const lines = physicalLines(head)
  const hashLines = lines.map((l, i) => [l, i] as const).filter(([l]) => l.startsWith('#'))
  if (hashLines.length === 0) return null
  const rows = tokenize(head).filter((r) => !isBlank(r) && !(head.length > 0 && lines[r.line - 1]?.startsWith('#')))
  if (rows.length < 2) return null
  const width = tableWidth(rows)
  const firstRow = rows[0]!.line
  const among = hashLines.some(([l, i]) => i + 1 > firstRow && tokenize(l)[0]!.fields.length !== width)
  return among ? '#' : null
}

function withoutComments(records: SampleRecord[], head: string, comment: string | null): SampleRecord[] {
  if (!comment) return records
  const lines = physicalLines(head)
  return records.filter((r) => !lines[r.line - 1]?.startsWith(comment))
}

/**
 * The footer, decided on the file's last lines: after the last row of the table's shape,
 * lines with one filled cell or another width (notes, sources, a copyright) and blank
 * lines; and a few table-shaped rows (totals) when a blank separator comes before them
 * and notes or a "Total" after.
 */
function chooseFooter(choice: FooterChoice | undefined, tail: string | null, head: string, tokenize: Tokenize, width: number, comment: string | null, body: SampleRecord[], reasons: string[]): number {
  if (choice === 'none') return 0
  if (typeof choice === 'number') return choice
  if (width < 2) return 0
  const text = tail ?? head
  const tailLines = physicalLines(text).length
  // The tail starts mid-file: read it from its first line break on.
  const from = tail === null ? 0 : firstBreakEnd(text)
  let records = withoutComments(tokenize(text.slice(from)), text.slice(from), comment)
  if (tail === null) records = records.filter((r) => body.length === 0 || r.line > body[0]!.line)
  if (records.length < 2) return 0
  // A note is sparse: one filled cell, or another width with fewer than half the cells filled.
  // A row of another width that is full of values is a broken row (reported as a row error),
  // unless a blank line sets it apart from the table, as footers are.
  const sparseNote = (r: SampleRecord) => !isBlank(r) && (filledCount(r.fields) === 1 || (r.fields.length !== width && filledCount(r.fields) < Math.ceil(width / 2)))
  const shapedNote = (r: SampleRecord) => !isBlank(r) && r.fields.length !== width
  let i = records.length
  while (i > 0 && (isBlank(records[i - 1]!) || sparseNote(records[i - 1]!) || shapedNote(records[i - 1]!))) i--
  const setApart = (from: number) => {
    let blankSeen = false
    for (const r of records.slice(from)) {
      if (isBlank(r)) blankSeen = true
      else if (!sparseNote(r) && !blankSeen) return false
    }
    return true
  }
  if (!setApart(i)) {
    i = records.length
    while (i > 0 && (isBlank(records[i - 1]!) || sparseNote(records[i - 1]!))) i--
  }
  const isNote = (r: SampleRecord) => sparseNote(r) || shapedNote(r)
  const notes = records.slice(i).some(isNote)
  let start = notes ? i : records.length
  // Totals: up to three table-shaped rows after a blank separator, before notes or named "Total".
  let j = i
  while (j > 0 && i - j < MAX_TOTAL_ROWS && !isBlank(records[j - 1]!)) j--
  const separated = j > 0 && j < i && isBlank(records[j - 1]!) && j - 1 > 0
  if (separated && (notes || records.slice(j, i).some((r) => TOTAL.test(r.fields.find((f) => f.trim() !== '')?.trim() ?? '')))) start = j - 1
  else if (notes) while (start > 0 && isBlank(records[start - 1]!)) start-- // the blank lines before the notes go with them
  if (start >= records.length) return 0
  const trailingBlank = records.slice(start).every(isBlank)
  if (trailingBlank) return 0 // blank lines at the end are blank lines, not a footer
  const firstFooterLine = records[start]!.line
  const lineOffset = tail === null ? 0 : physicalLines(text.slice(0, from)).length
  const footerLines = tailLines - (firstFooterLine - 1 + lineOffset)
  reasons.push(`the last ${footerLines} line(s) look like a footer: ${start < i ? 'a blank separator, totals and notes' : 'after the last row, notes with one filled cell or another width'} (skipFooter=none loads them)`)
  return footerLines
}

function firstBreakEnd(text: string): number {
  const at = text.search(/\r\n|\r|\n/)
  if (at < 0) return text.length
  return text.startsWith('\r\n', at) ? at + 2 : at + 1
}

/**
 * The first row is a header unless its cells look like the data below them: a vote per
 * column, as Python's csv.Sniffer does, and a tie means a header (the common case).
 */
export function detectHeader(rows: string[][]): boolean {
  return headerVotes(rows) >= 0
}

function headerVotes(rows: string[][]): number {
  if (rows.length < 2) return 0
  const [first, ...rest] = rows as [string[], ...string[][]]
  const data = rest.slice(0, HEADER_SAMPLE_ROWS)
  const names = first.map((name) => name.trim()).filter((name) => name !== '')
  let votes = new Set(names).size < names.length ? -1 : 0 // column names rarely repeat; data does
  first.forEach((name, col) => {
    const values = data.map((row) => row[col]?.trim() ?? '').filter((v) => v !== '')
    votes += columnVote(name.trim(), values)
  })
  return votes
}

function headerWhy(rows: string[][]): string {
  if (rows.length < 2) return 'it is the only line'
  const first = rows[0]!
  const data = rows.slice(1, HEADER_SAMPLE_ROWS + 1)
  const typed = first.filter((name, col) => {
    const values = data.map((row) => row[col]?.trim() ?? '').filter((v) => v !== '')
    return values.length > 0 && typeOf(values[0]!) !== 'text' && typeOf(name.trim()) === 'text'
  })
  return typed.length > 0 ? `its cells are text over columns of ${describeTypes(rows)}` : 'its cells differ from the rows below (a tie counts as a header; header=false reads it as data)'
}

function describeTypes(rows: string[][]): string {
  const kinds = new Set<string>()
  for (const row of rows.slice(1, 20)) for (const v of row) { const t = typeOf(v.trim()); if (t !== 'text') kinds.add(t === 'number' ? 'numbers' : t === 'date' ? 'dates' : 'booleans') }
  return [...kinds].join(' and ') || 'values'
}

function columnVote(name: string, values: string[]): number {
  const types = new Set(values.map(typeOf))
  if (types.size !== 1) return 0
  const type = typeOf(values[0]!)
  if (type !== 'text') return name === '' ? 0 : typeOf(name) === type ? -1 : 1
  const length = values[0]!.length
  if (values.some((v) => v.length !== length)) return 0
  return name.length === length ? -1 : 1
}

export function typeOf(value: string): 'number' | 'date' | 'boolean' | 'text' {
  if (NUMBER.test(value)) return 'number'
  if (DATE.test(value)) return 'date'
  if (/^(?:true|false)$/i.test(value)) return 'boolean'
  return 'text'
}

/**
 * The second line is a header too when it is text where the rows below have numbers or
 * dates, and it sits under a first line with gaps (merged cells saved as empty ones).
 */
function isSecondHeaderLine(body: SampleRecord[]): boolean {
  const [top, second] = [body[0]!.fields, body[1]!.fields]
  if (filledCount(top) === top.length) return isUnitsLine(second, body.slice(2).map((r) => r.fields))
  if (filledCount(second) < 2) return false
  return headerVotes(body.slice(1).map((r) => r.fields)) > 0 && !second.some((v) => { const t = typeOf(v.trim()); return t === 'number' && !/^(?:19|20)\d\d$/.test(v.trim()) })
}

/**
 * Under a full header, a line of units or notes ("", "persons", "EUR"): a gap, and text only
 * where every row below has a number or a date. Loaded, it would be a row of text in
 * numeric columns, or fail every one; as data it is never what the file means.
 */
function isUnitsLine(line: string[], below: string[][]): boolean {
  const rows = below.slice(0, HEADER_SAMPLE_ROWS)
  if (rows.length < 2 || filledCount(line) === 0 || filledCount(line) === line.length) return false
  return line.every((cell, col) => {
    const value = cell.trim()
    if (value === '') return true
    if (typeOf(value) !== 'text') return false
    return rows.every((row) => { const t = typeOf((row[col] ?? '').trim()); return t === 'number' || t === 'date' })
  })
}

/**
 * The names of a two-line header. Under a full top line the second holds units: the top
 * names alone. Else cell by cell; a top cell left empty continues the one to its left (a
 * merged cell). The reader joins the file's header lines with this too.
 */
export function joinHeader(top: string[], bottom: string[]): string[] {
  if (top.length > 0 && filledCount(top) === top.length) return top.map((cell) => cell.trim())
  let carried = ''
  return Array.from({ length: Math.max(top.length, bottom.length) }, (_, i) => {
    const above = (top[i] ?? '').trim()
    if (above !== '') carried = above
    const below = (bottom[i] ?? '').trim()
    return [above !== '' ? above : below !== '' ? carried : '', below].filter((p) => p !== '').join(' ')
  })
}

function nameColumns(header: string[], width: number): { names: string[]; renamed: number[] } {
  const seen = new Set<string>()
  const renamed: number[] = []
  const names = Array.from({ length: width }, (_, i) => {
    const name = (header[i] ?? '').trim()
    const clear = name !== '' && Buffer.byteLength(name) <= MAX_NAME_BYTES && !seen.has(name.toLowerCase())
    seen.add(name.toLowerCase())
    if (clear || header.length === 0) return clear ? name : `column_${i + 1}`
    renamed.push(i)
    return `column_${i + 1}`
  })
  return { names, renamed }
}
