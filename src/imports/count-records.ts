/**
 * Counts CSV records in a byte stream without parsing it: a newline outside
 * quotes ends one, and a doubled quote inside quotes toggles twice. Imports use it
 * on files sent straight to COPY, and it notices what COPY would load without a word
 * but our reader reports: blank or delimiter-only lines, and a quoted field that runs
 * over `maxQuotedLines` lines (a quote that never closed).
 */
export function createRecordCounter(quoteByte = 0x22, delimiterByte = 0x2c, maxQuotedLines = Infinity) {
  let newlines = 0
  let quotedBreaks = 0 // line breaks inside quoted fields
  let inQuotes = false
  let quotedLines = 0
  let lastByte = -1
  let atLineStart = true // scanning a line that so far holds only delimiters (or nothing)
  let blankLines = 0
  let runawayQuote = false
  return { push, records, lines, blankLines: () => blankLines, runawayQuote: () => runawayQuote }

  function push(chunk: Buffer) {
    if (chunk.length === 0) return
    lastByte = chunk[chunk.length - 1]!
    let i = 0
    if (atLineStart) i = checkLineStart(chunk, 0)
    let nextQuote = chunk.indexOf(quoteByte, i)
    for (;;) {
      if (inQuotes) {
        const end = nextQuote < 0 ? chunk.length : nextQuote
        for (let nl = chunk.indexOf(10, i); nl >= 0 && nl < end; nl = chunk.indexOf(10, nl + 1)) {
          quotedBreaks++
          if (++quotedLines > maxQuotedLines) runawayQuote = true
        }
        if (nextQuote < 0) return
        inQuotes = false
        i = nextQuote + 1
        nextQuote = chunk.indexOf(quoteByte, i)
        continue
      }
      const newline = chunk.indexOf(10, i)
      if (newline >= 0 && (nextQuote < 0 || newline < nextQuote)) {
        newlines++
        i = checkLineStart(chunk, newline + 1)
        continue
      }
      if (nextQuote < 0) return
      inQuotes = true
      quotedLines = 0
      i = nextQuote + 1
      nextQuote = chunk.indexOf(quoteByte, i)
    }
  }

  // From the start of a line: skips delimiters; a line break right after them is a blank line.
  function checkLineStart(chunk: Buffer, from: number): number {
    let i = from
    while (i < chunk.length && chunk[i] === delimiterByte) i++
    if (i === chunk.length) {
      atLineStart = true
      return i
    }
    atLineStart = false
    const b = chunk[i]
    if (b === 10 || b === 13) blankLines++
    return i
  }

  /** Records so far, counting a last one that has no line break after it. */
  function records(): number {
    return newlines + (lastByte >= 0 && lastByte !== 10 ? 1 : 0)
  }

  /** Physical lines so far (LF-terminated; CRLF files count the same). */
  function lines(): number {
    return records() + quotedBreaks
  }
}
