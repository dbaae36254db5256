// The character-by-character tokenizer that detection and the escape reader used before
// src/imports/tokenizer.ts: kept as the reference the new one is fuzzed against
// (test/tokenizer.test.ts) and measured against (bench/tokenizer.ts). Not used by the gateway.
type Quoting = { delimiter: string; quote: string | null; escape: string | null }
type Limits = { maxFieldBytes: number; maxFields: number }
export type ParsedRecord = { record: string[]; raw: string }

function parseFailure(code: string): Error & { code: string } {
  return Object.assign(new Error(code), { code })
}

export function createTokenizer(dialect: Quoting, limits: Limits) {
  const { delimiter, quote } = dialect
  const escape = dialect.escape === quote ? null : dialect.escape // a doubled quote is always honoured
  type State = 'fieldStart' | 'unquoted' | 'quoted' | 'quoteInQuoted' | 'escaped' | 'escapedInQuoted'
  let record: string[] = []
  let field = ''
  let raw = ''
  let state: State = 'fieldStart'
  let afterCR = false
  return { push, end }

  function push(text: string): ParsedRecord[] {
    const done: ParsedRecord[] = []
    let from = 0
    for (let i = 0; i < text.length; i++) {
      const c = text[i]!
      if (afterCR && c === '\n') { afterCR = false; from = i + 1; continue } // the rest of a \r\n
      afterCR = false
      if (!step(c)) continue
      done.push({ record, raw: raw + text.slice(from, i + 1) })
      record = []
      raw = ''
      from = i + 1
      afterCR = c === '\r'
    }
    raw += text.slice(from)
    if (raw.length > limits.maxFieldBytes) throw parseFailure('CSV_MAX_RECORD_SIZE')
    return done
  }

  function end(): ParsedRecord[] {
    if (state === 'quoted' || state === 'escapedInQuoted') throw parseFailure('CSV_QUOTE_NOT_CLOSED')
    if (state === 'escaped') field += escape // nothing left to escape: keep it as text
    if (state === 'fieldStart' && record.length === 0) return []
    endField()
    return [{ record, raw }]
  }

  // Returns true when c ends the record.
  function step(c: string): boolean {
    switch (state) {
      case 'escaped': return append(c, 'unquoted')
      case 'escapedInQuoted': return append(c, 'quoted')
      case 'quoted':
        if (c === escape) state = 'escapedInQuoted'
        else if (c === quote) state = 'quoteInQuoted'
        else append(c, 'quoted')
        return false
      case 'quoteInQuoted':
        if (c === quote) return append(c, 'quoted')
        state = 'unquoted' // text after a closing quote is kept, as Python's csv does
    }
    if (c === delimiter) {
      endField()
      return false
    }
    if (c === '\n' || c === '\r') {
      endField()
      return true
    }
    if (c === escape) state = 'escaped'
    else if (c === quote && state === 'fieldStart') state = 'quoted'
    else append(c, 'unquoted')
    return false
  }

  function append(c: string, next: State): false {
    field += c
    state = next
    if (field.length > limits.maxFieldBytes) throw parseFailure('CSV_MAX_RECORD_SIZE')
    return false
  }

  function endField() {
    record.push(field)
    field = ''
    state = 'fieldStart'
    if (record.length > limits.maxFields) throw parseFailure('CSV_TOO_MANY_FIELDS')
  }
}
