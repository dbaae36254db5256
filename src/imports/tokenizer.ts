// A fast, resumable, Python-csv-like CSV tokenizer: pure (no I/O), fed decoded text in chunks
// of any size. It replaces both csv-parse and the per-character tokenizer of dialect.ts on
// the import path, and gives the same fields as the latter for every dialect.
//
// Rules (those of Python's csv module, and of dialect.ts's createTokenizer):
// - the delimiter ends a field; `\n`, `\r` and `\r\n` each end a record (a `\r\n` split
//   across two chunks is one line break, never an extra empty record);
// - a quote opens a quoted field only at the start of a field; inside, a doubled quote is one
//   quote character; text after the closing quote up to the delimiter is kept (`"ab"cd` is
//   `abcd`); a quote inside an unquoted field is literal;
// - an escape character (other than the quote) takes the next character literally, inside
//   and outside quotes; an escape at the very end of the text is kept as text;
// - with no quote character, nothing is quoted;
// - a blank line is a record of one empty field (the caller decides what blank lines are).
//
// How it is fast: each chunk is scanned with indexOf/charCodeAt; a record with no quote, no
// escape and no lone `\r` is cut from the chunk and split on the delimiter natively; other
// fields are sliced from the chunk and only joined across chunk boundaries, doubled quotes
// and escapes. Fields and `raw` may therefore be slices of the pushed chunk: a caller keeping
// many of them for long (error samples) keeps their chunks too, and should copy them.
// Records are instances of a small class, not literals (see Token below for why).
//
// A record ended by a `\r` that is the chunk's last character is held back until the next
// push() (or end()) shows whether a `\n` follows, so that its raw is exact: the raws of all
// records, in order, are the whole text.
//
// Errors are `Error`s whose message and `code` are one of CSV_QUOTE_NOT_CLOSED,
// CSV_MAX_RECORD_SIZE, CSV_TOO_MANY_FIELDS, CSV_RECORD_TOO_MANY_LINES. A limit fails at the
// first character that breaks it, wherever the chunks were cut, so which error a text gives
// does not depend on how it was fed. Records completed earlier in the same push() (or end())
// call are not lost: they travel on the error as `err.completed` (records returned by earlier
// calls are not repeated). After a throw the tokenizer is spent: every later call throws the
// same error again (with `completed` empty).

export type Quoting = { delimiter: string; quote: string | null; escape: string | null } // escape === quote means RFC-4180 doubling only; null escape = none
export type TokenLimits = { maxFieldBytes: number; maxFields: number; maxRecordLines: number } // maxRecordLines: Infinity = no limit
export type TokenizedRecord = {
  fields: string[]
  quotedEmpty: number[] | null // indexes of fields written as "" (quoted empty), null when none (the common case: no allocation)
  raw: string // the record's exact text INCLUDING its line break (if any), so callers can count physical lines
  breaks: number // physical line breaks inside raw, including the terminating one (\r\n counts once)
}
export type TokenizerError = Error & { code: TokenizerErrorCode; completed: TokenizedRecord[] }
export type TokenizerErrorCode = 'CSV_QUOTE_NOT_CLOSED' | 'CSV_MAX_RECORD_SIZE' | 'CSV_TOO_MANY_FIELDS' | 'CSV_RECORD_TOO_MANY_LINES'

// States between characters.
const FIELD_START = 0 // nothing of the current field read yet
const UNQUOTED = 1
const QUOTED = 2
const QUOTE_IN_QUOTED = 3 // a quote inside a quoted field: it closes the field or doubles
const ESCAPED = 4 // the next character is literal, outside quotes
const ESCAPED_IN_QUOTED = 5

const CR = 13
const LF = 10

/**
 * Limits: a record's raw text without its final line break (and so every field) may have at
 * most `maxFieldBytes` characters (UTF-16 code units of the decoded text), a record at most
 * `maxFields` fields and its raw text at most `maxRecordLines` line breaks, counting the
 * final one (a runaway quote fails at the first break over, not at the end of the file). A last
 * record without a line break spans `breaks + 1` physical lines: a caller limiting lines checks that one.
 */
export function createTokenizer(quoting: Quoting, limits: TokenLimits): { push(text: string): TokenizedRecord[]; end(): TokenizedRecord[] } {
  const tokenizer = new Tokenizer(quoting, limits)
  return { push: (text) => tokenizer.push(text), end: () => tokenizer.end() }
}

// Not one object or array literal is returned. V8 allocates a literal in the old generation
// ("pretenures" its allocation site) once most of its objects have survived a few young GCs,
// as they do when a caller keeps records a while (the dialect sample, a batch waiting for
// COPY). That decision sticks. Old records keep their fields alive through every young GC,
// and tokenizing runs at half speed in GC. So records are class instances and arrays are
// copies (slice, split), which V8 never pretenures.
class Token implements TokenizedRecord {
  constructor(public fields: string[], public quotedEmpty: number[] | null, public raw: string, public breaks: number) {}
}

// A class rather than closures: its methods are shared by every tokenizer, and scan() copies
// what it uses into locals, so the optimized loop does not depend on one instance's settings.
class Tokenizer {
  private readonly D: number
  private readonly Q: number // -1: none
  private readonly E: number // -1: none (or the quote itself: doubling only)
  private readonly delimiter: string
  private readonly quoteChar: string
  private readonly escapeChar: string
  private readonly maxSize: number
  private readonly maxFields: number
  private readonly maxLines: number
  private readonly splitLimit: number

  // The record being read, carried from one chunk to the next.
  private readonly fields: string[] = [] // the record's fields so far: [0, fieldCount), copied out at its end
  private fieldCount = 0
  private readonly out: TokenizedRecord[] = [] // the records of one call, copied out at its end
  private quotedEmpty: number[] | null = null
  private acc = '' // the current field's text from earlier chunks, or before a doubled quote or an escape
  private quoted = false // the current field opened with a quote
  private state = FIELD_START
  private rawCarry = '' // the record's text in earlier chunks
  private breaks = 0 // line breaks in the record so far
  private lastCR = false // the previous chunk ended with \r inside the record (a split \r\n counts once)
  private pending: TokenizedRecord | null = null // ended by \r at a chunk's end: its \n may open the next chunk
  private failed: TokenizerError | null = null

  constructor(quoting: Quoting, limits: TokenLimits) {
    const escape = quoting.escape === quoting.quote ? null : quoting.escape // a doubled quote is always honoured
    this.D = code(quoting.delimiter)
    this.Q = quoting.quote === null ? -1 : code(quoting.quote)
    this.E = escape === null ? -1 : code(escape)
    this.delimiter = quoting.delimiter
    this.quoteChar = quoting.quote ?? ''
    this.escapeChar = escape ?? ''
    this.maxSize = limits.maxFieldBytes
    this.maxFields = limits.maxFields
    this.maxLines = limits.maxRecordLines
    // split() takes its limit as a uint32 (Infinity would be 0): cap it so the array stays bounded.
    this.splitLimit = limits.maxFields + 1 < 2 ** 32 - 1 ? limits.maxFields + 1 : 2 ** 32 - 1
  }

  push(text: string): TokenizedRecord[] {
    if (this.failed) throw respent(this.failed)
    try {
      this.scan(text, this.out)
    } catch (err) {
      throw this.spend(err, takeAll(this.out))
    }
    return takeAll(this.out)
  }

  end(): TokenizedRecord[] {
    if (this.failed) throw respent(this.failed)
    const out = this.out
    if (this.pending) {
      out.push(this.pending)
      this.pending = null
    }
    try {
      const state = this.state
      if (state === QUOTED || state === ESCAPED_IN_QUOTED) throw failure('CSV_QUOTE_NOT_CLOSED')
      if (state === FIELD_START && this.fieldCount === 0) return takeAll(out) // nothing since the last record
      const value = state === ESCAPED ? this.acc + this.escapeChar : this.acc // nothing left to escape: keep it as text
      if (this.quoted && value === '') (this.quotedEmpty ??= []).push(this.fieldCount)
      this.fields[this.fieldCount++] = value
      if (this.fieldCount > this.maxFields) throw failure('CSV_TOO_MANY_FIELDS')
      out.push(new Token(this.fields.slice(0, this.fieldCount), this.quotedEmpty, this.rawCarry, this.breaks))
      this.fieldCount = 0
      this.quotedEmpty = null
      this.acc = ''
      this.quoted = false
      this.state = FIELD_START
      this.rawCarry = ''
      this.breaks = 0
      this.lastCR = false
      return takeAll(out)
    } catch (err) {
      throw this.spend(err, takeAll(out))
    }
  }

  private scan(text: string, out: TokenizedRecord[]): void {
    const { D, Q, E, delimiter, quoteChar, escapeChar, maxSize, maxFields, maxLines, splitLimit, fields } = this
    let { fieldCount, quotedEmpty, acc, quoted, state, rawCarry, breaks, lastCR } = this
    const len = text.length
    let i = 0
    if (this.pending !== null) {
      if (len === 0) return
      if (text.charCodeAt(0) === LF) { // the rest of the \r\n that ended it
        this.pending.raw += '\n'
        i = 1
      }
      out.push(this.pending)
      this.pending = null
    }
    let recStart = i // where the record's text starts in this chunk (rawCarry holds what came before)
    let segStart = i // where the current field's uncopied text starts
    // Next position at or after i of \n, \r, quote and escape in the chunk (len: none), found lazily.
    let nextLF = -1
    let nextCR = -1
    let nextQ = Q < 0 ? len : -1
    let nextE = E < 0 ? len : -1
    let c: number

    outer: while (i < len) {
      if (state === FIELD_START && fieldCount === 0 && rawCarry === '') {
        // A fresh record: when its line has nothing special, cut and split it natively.
        if (nextLF < i) nextLF = indexOrEnd(text, '\n', i)
        if (nextCR < i) nextCR = indexOrEnd(text, '\r', i)
        const term = nextLF < nextCR ? nextLF : nextCR
        if (term < len && term - i <= maxSize && maxLines >= 1) {
          if (nextQ < i) nextQ = indexOrEnd(text, quoteChar, i)
          if (nextE < i) nextE = indexOrEnd(text, escapeChar, i)
          if (nextQ > term && nextE > term) {
            const cells = text.slice(i, term).split(delimiter, splitLimit)
            if (cells.length <= maxFields) {
              let next = term + 1
              if (term === nextCR) {
                if (next === len) { // is there a \n in the next chunk?
                  this.pending = new Token(cells, null, text.slice(i, next), 1)
                  i = recStart = len
                  break outer
                }
                if (text.charCodeAt(next) === LF) next++
              }
              out.push(new Token(cells, null, text.slice(i, next), 1))
              i = recStart = segStart = next
              continue
            }
          }
        }
        // Otherwise read it character by character below: it then fails or reads the same.
      }

      if (state === FIELD_START) {
        if (text.charCodeAt(i) === Q && Q !== D) {
          state = QUOTED
          quoted = true
          segStart = ++i
          continue
        }
        state = UNQUOTED
        segStart = i
      }
      if (state === UNQUOTED) {
        for (; i < len; i++) {
          c = text.charCodeAt(i)
          if (c === D) {
            if (rawCarry.length + i + 1 - recStart > maxSize) throw failure('CSV_MAX_RECORD_SIZE')
            const value = acc === '' ? text.slice(segStart, i) : acc + text.slice(segStart, i)
            if (quoted && value === '') (quotedEmpty ??= []).push(fieldCount)
            fields[fieldCount++] = value
            if (fieldCount >= maxFields) throw failure('CSV_TOO_MANY_FIELDS') // this delimiter opens one more
            acc = ''
            quoted = false
            state = FIELD_START
            segStart = ++i
            continue outer
          }
          if (c === LF || c === CR) {
            // The record ends here.
            if (rawCarry.length + i - recStart > maxSize) throw failure('CSV_MAX_RECORD_SIZE')
            const value = acc === '' ? text.slice(segStart, i) : acc + text.slice(segStart, i)
            if (quoted && value === '') (quotedEmpty ??= []).push(fieldCount)
            fields[fieldCount++] = value
            if (fieldCount > maxFields) throw failure('CSV_TOO_MANY_FIELDS')
            if (c === CR || (i > recStart ? text.charCodeAt(i - 1) !== CR : !lastCR)) breaks++
            if (breaks > maxLines) throw failure('CSV_RECORD_TOO_MANY_LINES')
            let next = i + 1
            let held = false
            if (c === CR) {
              if (next === len) held = true
              else if (text.charCodeAt(next) === LF) next++
            }
            const record = new Token(fields.slice(0, fieldCount), quotedEmpty, rawCarry === '' ? text.slice(recStart, next) : rawCarry + text.slice(recStart, next), breaks)
            fieldCount = 0
            quotedEmpty = null
            acc = ''
            quoted = false
            state = FIELD_START
            rawCarry = ''
            breaks = 0
            lastCR = false
            i = recStart = segStart = next
            if (held) { // is there a \n in the next chunk?
              this.pending = record
              break outer
            }
            out.push(record)
            continue outer
          }
          if (c === E) {
            acc += text.slice(segStart, i)
            state = ESCAPED
            i++
            continue outer
          }
        }
        break
      }
      if (state === QUOTED) {
        for (; i < len; i++) {
          c = text.charCodeAt(i)
          if (c === E) {
            acc += text.slice(segStart, i)
            state = ESCAPED_IN_QUOTED
            i++
            continue outer
          }
          if (c === Q) {
            acc += text.slice(segStart, i)
            state = QUOTE_IN_QUOTED
            i++
            continue outer
          }
          if (c === CR || c === LF) { // a line break inside the field
            if (rawCarry.length + i + 1 - recStart > maxSize) throw failure('CSV_MAX_RECORD_SIZE')
            if ((c === CR || (i > recStart ? text.charCodeAt(i - 1) !== CR : !lastCR)) && ++breaks > maxLines) throw failure('CSV_RECORD_TOO_MANY_LINES')
          }
        }
        break
      }
      if (state === QUOTE_IN_QUOTED) {
        // acc holds the field up to the quote just read.
        if (text.charCodeAt(i) === Q) { // doubled: the second one is text
          state = QUOTED
          segStart = i++
        } else {
          state = UNQUOTED // closed; text after the closing quote is kept, as Python's csv does
          segStart = i
        }
        continue
      }
      // ESCAPED or ESCAPED_IN_QUOTED: the character at i is text, whatever it is.
      c = text.charCodeAt(i)
      if (c === CR || c === LF) { // an escaped line break: text, but still a physical line
        if (rawCarry.length + i + 1 - recStart > maxSize) throw failure('CSV_MAX_RECORD_SIZE')
        if ((c === CR || (i > recStart ? text.charCodeAt(i - 1) !== CR : !lastCR)) && ++breaks > maxLines) throw failure('CSV_RECORD_TOO_MANY_LINES')
      }
      state = state === ESCAPED ? UNQUOTED : QUOTED
      segStart = i++
    }

    // The chunk ends inside the record (or at its very start).
    if (i >= len) {
      if (state === UNQUOTED || state === QUOTED) acc += text.slice(segStart, len)
      if (recStart < len) {
        rawCarry += text.slice(recStart, len)
        if (rawCarry.length > maxSize) throw failure('CSV_MAX_RECORD_SIZE')
        lastCR = text.charCodeAt(len - 1) === CR
      }
    }
    this.fieldCount = fieldCount
    this.quotedEmpty = quotedEmpty
    this.acc = acc
    this.quoted = quoted
    this.state = state
    this.rawCarry = rawCarry
    this.breaks = breaks
    this.lastCR = lastCR
  }

  private spend(err: unknown, completed: TokenizedRecord[]): unknown {
    if (err instanceof Error && (err as TokenizerError).completed !== undefined) {
      (err as TokenizerError).completed = completed
      this.failed = err as TokenizerError
    }
    return err
  }
}

/** The array's items in a new array (a copy: never pretenured), leaving it empty for the next call. */
function takeAll(items: TokenizedRecord[]): TokenizedRecord[] {
  const all = items.slice()
  items.length = 0
  return all
}

function respent(err: TokenizerError): TokenizerError {
  err.completed = []
  return err
}

function failure(code: TokenizerErrorCode): TokenizerError {
  return Object.assign(new Error(code), { code, completed: [] as TokenizedRecord[] })
}

function code(char: string): number {
  if (char.length !== 1) throw new Error(`a CSV delimiter, quote or escape is one character, got ${JSON.stringify(char)}`)
  return char.charCodeAt(0)
}

function indexOrEnd(text: string, char: string, from: number): number {
  const at = text.indexOf(char, from)
  return at < 0 ? text.length : at
}
