/**
 * Counts CSV records in a byte stream without parsing it: a newline outside
 * quotes ends one, and a doubled quote inside quotes toggles twice. Imports use it
 * on files sent straight to COPY.
 */
export function createRecordCounter(quoteByte = 0x22) {
  let newlines = 0
  let inQuotes = false
  let lastByte = -1
  return { push, records }

  function push(chunk: Buffer) {
    if (chunk.length === 0) return
    lastByte = chunk[chunk.length - 1]!
    let i = 0
    let nextQuote = chunk.indexOf(quoteByte)
    for (;;) {
      if (inQuotes) {
        if (nextQuote < 0) return
        inQuotes = false
        i = nextQuote + 1
        nextQuote = chunk.indexOf(quoteByte, i)
        continue
      }
      const newline = chunk.indexOf(10, i)
      if (newline >= 0 && (nextQuote < 0 || newline < nextQuote)) {
        newlines++
        i = newline + 1
        continue
      }
      if (nextQuote < 0) return
      inQuotes = true
      i = nextQuote + 1
      nextQuote = chunk.indexOf(quoteByte, i)
    }
  }

  /** Records so far, counting a last one that has no line break after it. */
  function records(): number {
    return newlines + (lastByte >= 0 && lastByte !== 10 ? 1 : 0)
  }
}
