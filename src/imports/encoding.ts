// Which character encoding a CSV file is written in, from byte ranges of it (its head and,
// for a larger file, its tail). The rules, in order:
//   1. a byte-order mark decides;
//   2. UTF-16/UTF-32 without a BOM shows as 0x00 bytes at one parity of offset (ASCII-ish text);
//   3. UTF-8 when every sample decodes strictly (a character cut at the head's end or the tail's
//      start is allowed); a file that is UTF-8 with some lines in a legacy encoding stays UTF-8, so
//      the reader reports those rows instead of loading either part as mojibake;
//   4. otherwise every legacy candidate (chardet's guesses that iconv-lite knows, windows-1252,
//      macintosh and the common CJK, Cyrillic, Greek and Central European code pages) is decoded
//      strictly over every line that has a non-ASCII byte; one that gives U+FFFD or C1 controls is
//      out unless none decodes cleanly; the rest are scored on how the decoded text reads (letters
//      of one script and one case pattern per word, letters a language uses together, common
//      ideographs, no symbols inside words, no box drawing), plus a share of chardet's confidence.
//      Ties go to windows-1252, the common case, and so does a file with too few non-ASCII
//      characters (FEW_CHARS) to tell one language from another, when windows-1252 reads them cleanly.
//   5. a UTF-8 file with some lines in a legacy encoding stays UTF-8 (those rows are reported);
//      the reason names what those lines read as, the encoding to choose to load them instead.
import { isUtf8 } from 'node:buffer'
import { analyse } from 'chardet'
import iconv from 'iconv-lite'

export type EncodingGuess = {
  encoding: string // lower-case iconv-lite name: 'utf-8', 'utf-16le', 'windows-1252', 'gb18030', ...
  bom: boolean
  reason: string // one sentence for the user
  alternatives: string[] // other encodings that also decode every sample strictly, best first
}

/** How much of the file detection wants: the head, and the tail when the file is larger. */
export const HEAD_SAMPLE_BYTES = 1024 * 1024
export const TAIL_SAMPLE_BYTES = 64 * 1024

// ---------------------------------------------------------------------------------------------
// Names

const ENCODING_ALIASES: Record<string, string> = {
  utf8: 'utf-8', ascii: 'utf-8', 'us-ascii': 'utf-8', utf16le: 'utf-16le', utf16be: 'utf-16be',
  latin1: 'iso-8859-1', 'latin-1': 'iso-8859-1', cp1252: 'windows-1252',
  macroman: 'macintosh', 'mac-roman': 'macintosh', 'x-mac-roman': 'macintosh', mac: 'macintosh',
  sjis: 'shift_jis', 'shift-jis': 'shift_jis', 'x-sjis': 'shift_jis', cp936: 'gbk',
  cp1250: 'windows-1250', cp1251: 'windows-1251', cp1253: 'windows-1253', cp1254: 'windows-1254',
  cp1255: 'windows-1255', cp1256: 'windows-1256', cp1257: 'windows-1257', cp1258: 'windows-1258',
  koi8r: 'koi8-r', eucjp: 'euc-jp', euckr: 'euc-kr', utf32le: 'utf-32le', utf32be: 'utf-32be',
}

/** A user-given or detected encoding name as the lower-case name iconv-lite decodes with. */
export function normalizeEncoding(name: string): string {
  const key = name.trim().toLowerCase()
  const encoding = Object.hasOwn(ENCODING_ALIASES, key) ? ENCODING_ALIASES[key]! : key
  if (iconv.encodingExists(encoding)) return encoding
  throw Object.assign(new Error(`The encoding "${name}" is not supported. Choose one such as utf-8 or windows-1252.`), {
    code: 'UNSUPPORTED_ENCODING' as const,
  })
}

// Always tried when the file is not UTF-8; chardet's other guesses are added to these.
const BASE_CANDIDATES = [
  'windows-1252', 'macintosh', 'windows-1250', 'iso-8859-2', 'windows-1251', 'koi8-r', 'iso-8859-7',
  'gb18030', 'big5', 'shift_jis', 'euc-jp', 'euc-kr',
]
const MULTI_BYTE = new Set(['gb18030', 'gbk', 'big5', 'shift_jis', 'euc-jp', 'euc-kr'])
// chardet's single-byte models are shared by an ISO/Windows pair: it names the Windows one when
// the sample has bytes in 0x80-0x9F. Its confidence applies to both.
const CHARDET_FAMILIES: Record<string, string[]> = {
  'iso-8859-1': ['windows-1252'], 'windows-1252': ['windows-1252'],
  'iso-8859-2': ['iso-8859-2', 'windows-1250'], 'windows-1250': ['iso-8859-2', 'windows-1250'],
  'iso-8859-7': ['iso-8859-7', 'windows-1253'], 'windows-1253': ['iso-8859-7', 'windows-1253'],
  'iso-8859-8': ['iso-8859-8', 'windows-1255'], 'windows-1255': ['iso-8859-8', 'windows-1255'],
  'iso-8859-9': ['iso-8859-9', 'windows-1254'], 'windows-1254': ['iso-8859-9', 'windows-1254'],
}
// Where two candidates decode this file to the same text, the name reported: windows-1252 for
// Western text (the brief's one answer for ISO-8859-1 too), gb18030 over gbk (a superset), else the
// ISO name, as chardet does when no byte is in 0x80-0x9F.
const SAME_TEXT_PREFERENCE = ['windows-1252', 'gb18030', 'iso-8859-2', 'iso-8859-7', 'iso-8859-9', 'iso-8859-8', 'iso-8859-6', 'iso-8859-5']
const WESTERN_BONUS = 0.05 // the tie-breaker towards windows-1252
const CHARDET_WEIGHT = 0.5 // chardet's confidence (0-100) counts up to this much of a score
const FEW_CHARS = 3 // up to this many non-ASCII characters are too few to read a language from
const SHRINK = 3 // pseudo-characters of score 0 added to every candidate: few characters, small differences

// How much of the non-ASCII lines is scored and shown to chardet.
const SCORE_HEAD_BYTES = 32 * 1024
const SCORE_TAIL_BYTES = 16 * 1024
const CHARDET_HEAD_BYTES = 16 * 1024
const CHARDET_TAIL_BYTES = 8 * 1024
const DECODE_CHUNK = 64 * 1024

// ---------------------------------------------------------------------------------------------
// Entry point

/**
 * Guess the encoding from `samples`: the head of the file (may cut a character at its end) and,
 * for a larger file, its tail (may start mid-character). Further samples in between are allowed.
 */
export function detectEncoding(samples: Buffer[]): EncodingGuess {
  const pieces = toPieces(samples)
  if (pieces.length === 0) return guess('utf-8', false, 'the file is empty; read as UTF-8')
  const head = pieces[0]!.bytes

  const bom = bomOf(head)
  if (bom) return bomGuess(bom, pieces)

  const wide = wideByNuls(pieces)
  if (wide) return wide

  const utf8 = utf8Check(pieces)
  if (utf8.invalidPieces.length === 0) {
    return guess('utf-8', false, utf8.multiByte === 0
      ? 'pure ASCII: read as UTF-8'
      : `valid UTF-8 throughout (${utf8.multiByte} non-ASCII character${utf8.multiByte === 1 ? '' : 's'})`)
  }

  const legacy = analyseLegacy(pieces)
  const best = legacy.ranked[0]!

  // A head that is valid UTF-8 with non-ASCII text: the file is UTF-8 and only its end is not.
  if (!utf8.invalidPieces.includes(0) && utf8.headMultiByte > 0) {
    const lines = legacy.invalidUtf8Lines
    const stray = strayEncoding(legacy)
    return guess('utf-8', false,
      `valid UTF-8 in the first ${sizeText(head.length)} (${utf8.headMultiByte} non-ASCII characters), but the end of the file is not valid UTF-8 ` +
      `(${lines} line${lines === 1 ? '' : 's'} there, which read${lines === 1 ? 's' : ''} as ${stray}); ` +
      `${lines === 1 ? 'that row' : 'those rows'} will be reported rather than loaded garbled`,
      [stray, ...legacy.ranked.map((c) => c.encoding)])
  }

  // UTF-8 lines among legacy ones: UTF-8 if those lines read well as UTF-8 and badly as the legacy guess.
  const mixed = mixedUtf8(legacy, best)
  if (mixed) return mixed

  return guess(best.encoding, false, legacyReason(legacy), legacy.ranked.slice(1).map((c) => c.encoding))
}

function guess(encoding: string, bom: boolean, reason: string, alternatives: string[] = []): EncodingGuess {
  return { encoding, bom, reason, alternatives: [...new Set(alternatives.filter((a) => a !== encoding))] }
}

// ---------------------------------------------------------------------------------------------
// Samples

type Piece = {
  bytes: Buffer
  index: number
  cutStart: boolean // may start mid-character (every sample but the head)
  cutEnd: boolean // may end mid-character (every sample but the tail; a lone head may be whole)
}

function toPieces(samples: Buffer[]): Piece[] {
  const kept = samples.filter((s) => s && s.length > 0)
  return kept.map((bytes, index) => ({
    bytes, index, cutStart: index > 0, cutEnd: kept.length === 1 || index < kept.length - 1,
  }))
}

function sizeText(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${Math.round(bytes / 1024 / 1024)} MiB` : bytes >= 1024 ? `${Math.round(bytes / 1024)} KiB` : `${bytes} bytes`
}

// ---------------------------------------------------------------------------------------------
// BOM

const BOMS: [string, number[]][] = [
  ['utf-32le', [0xff, 0xfe, 0x00, 0x00]], ['utf-32be', [0x00, 0x00, 0xfe, 0xff]], // before UTF-16's
  ['utf-8', [0xef, 0xbb, 0xbf]], ['utf-16le', [0xff, 0xfe]], ['utf-16be', [0xfe, 0xff]],
]

function bomOf(head: Buffer): [string, number[]] | null {
  return BOMS.find(([, bytes]) => head.length >= bytes.length && bytes.every((b, i) => head[i] === b)) ?? null
}

/** The encoding whose byte-order mark starts the file, if any. */
export function byteOrderMark(head: Buffer): string | null {
  return bomOf(head)?.[0] ?? null
}

function bomGuess([encoding, bytes]: [string, number[]], pieces: Piece[]): EncodingGuess {
  const hex = bytes.map((b) => b.toString(16).toUpperCase().padStart(2, '0')).join(' ')
  let reason = `byte-order mark ${hex}: ${encoding.toUpperCase()}`
  if (encoding === 'utf-8') {
    const check = utf8Check(pieces.map((p, i) => (i === 0 ? { ...p, bytes: p.bytes.subarray(3) } : p)))
    if (check.invalidPieces.length > 0) reason += `, though ${check.invalidPieces.includes(0) ? 'some lines' : 'the end of the file'} ${check.invalidPieces.includes(0) ? 'are' : 'is'} not valid UTF-8 and will be reported`
  }
  return guess(encoding, true, reason)
}

// ---------------------------------------------------------------------------------------------
// UTF-16 / UTF-32 without a BOM: ASCII characters take one byte and 0x00s.

const NUL_SCAN_BYTES = 64 * 1024

function wideByNuls(pieces: Piece[]): EncodingGuess | null {
  const head = pieces[0]!.bytes
  const n = Math.min(head.length, NUL_SCAN_BYTES) & ~1
  if (n < 2) return null
  const zeros = [0, 0, 0, 0]
  for (let i = 0; i < n; i++) if (head[i] === 0) zeros[i & 3]!++
  const [z0, z1, z2, z3] = zeros as [number, number, number, number]
  const quarter = n / 4
  const pairs = n / 2
  let encoding: string | null = null
  let share = 0
  if (n >= 8 && z1 + z2 + z3 >= 2.7 * quarter && z0 < 0.5 * quarter) [encoding, share] = ['utf-32le', (z1 + z2 + z3) / (3 * quarter)]
  else if (n >= 8 && z0 + z1 + z2 >= 2.7 * quarter && z3 < 0.5 * quarter) [encoding, share] = ['utf-32be', (z0 + z1 + z2) / (3 * quarter)]
  else if (z1 + z3 >= Math.max(2, 0.1 * pairs) && z0 + z2 <= 0.02 * (z1 + z3)) [encoding, share] = ['utf-16le', (z1 + z3) / pairs]
  else if (z0 + z2 >= Math.max(2, 0.1 * pairs) && z1 + z3 <= 0.02 * (z0 + z2)) [encoding, share] = ['utf-16be', (z0 + z2) / pairs]
  if (!encoding) return null

  const unit = encoding.startsWith('utf-32') ? 4 : 2
  const headText = decodeWide(head.subarray(0, head.length - (head.length % unit)), encoding)
  if (!plausibleWide(headText, pieces[0]!.cutEnd)) return null
  let tailNote = ''
  for (const piece of pieces.slice(1)) {
    const aligned = alignWide(piece.bytes, encoding, unit)
    if (!plausibleWide(decodeWide(aligned, encoding), piece.cutEnd, true)) tailNote = '; the end of the file does not decode as cleanly and will be reported where it fails'
  }
  const half = encoding.endsWith('le') ? 'low byte first' : 'high byte first'
  const where = encoding === 'utf-16le' ? 'odd' : encoding === 'utf-16be' ? 'even' : 'three of every four'
  return guess(encoding, false,
    `no byte-order mark, but ${Math.round(share * 100)}% of the bytes at ${where} offsets are 0x00 and the text decodes as ${encoding.toUpperCase()} (${half})${tailNote}`)
}

function decodeWide(bytes: Buffer, encoding: string): string {
  return iconv.decode(bytes, encoding, { stripBOM: false })
}

/** The tail may start at any byte: shift it so its 0x00s fall where the head's do. */
function alignWide(bytes: Buffer, encoding: string, unit: number): Buffer {
  let best = bytes
  let bestNuls = -1
  for (let shift = 0; shift < unit; shift++) {
    let nuls = 0
    const want = encoding === 'utf-16le' ? 1 : encoding === 'utf-16be' ? 0 : encoding === 'utf-32le' ? 3 : 0
    for (let i = shift; i < Math.min(bytes.length, NUL_SCAN_BYTES); i++) if (bytes[i] === 0 && (i - shift) % unit === want) nuls++
    if (nuls > bestNuls) [best, bestNuls] = [bytes.subarray(shift), nuls]
  }
  return best.subarray(0, best.length - (best.length % unit))
}

function plausibleWide(text: string, cutEnd: boolean, cutStart = false): boolean {
  let t = text
  if (cutStart && /^[\udc00-\udfff]/.test(t)) t = t.slice(1)
  if (cutEnd && /[\ud800-\udbff]$/.test(t)) t = t.slice(0, -1)
  if (/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]|\ufffd/.test(t)) return false
  const controls = (t.match(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u0080-\u009f\ufffe\uffff]/g) ?? []).length
  return controls <= Math.max(1, t.length * 0.01)
}

// ---------------------------------------------------------------------------------------------
// UTF-8

type Utf8Check = { invalidPieces: number[]; multiByte: number; headMultiByte: number }

function utf8Check(pieces: Piece[]): Utf8Check {
  const invalidPieces: number[] = []
  let multiByte = 0
  let headMultiByte = 0
  for (const piece of pieces) {
    let bytes = piece.bytes
    if (piece.cutStart) bytes = bytes.subarray(leadingContinuations(bytes))
    if (piece.cutEnd) bytes = bytes.subarray(0, bytes.length - incompleteUtf8Tail(bytes))
    if (!isUtf8(bytes)) invalidPieces.push(piece.index)
    const leads = countLeadBytes(bytes)
    multiByte += leads
    if (piece.index === 0) headMultiByte = leads
  }
  return { invalidPieces, multiByte, headMultiByte }
}

function countLeadBytes(bytes: Buffer): number {
  let n = 0
  for (let i = 0; i < bytes.length; i++) if (bytes[i]! >= 0xc2) n++
  return n
}

function leadingContinuations(bytes: Buffer): number {
  let i = 0
  while (i < 3 && i < bytes.length && (bytes[i]! & 0xc0) === 0x80) i++
  return i
}

export function utf8SequenceLength(lead: number): number {
  return lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2
}

/** How many bytes at the end start a UTF-8 character that the end cuts off. */
export function incompleteUtf8Tail(bytes: Buffer): number {
  for (let i = 1; i <= Math.min(3, bytes.length); i++) {
    const b = bytes[bytes.length - i]!
    if (b < 0x80) return 0
    if (b >= 0xc0) return utf8SequenceLength(b) > i ? i : 0
  }
  return 0
}

// ---------------------------------------------------------------------------------------------
// Legacy encodings

/** One sample's lines that have a non-ASCII byte, joined by \n (ASCII lines read the same in every candidate). */
type Part = { bytes: Buffer; cutEnd: boolean; unaligned: boolean; lines: number }

type Candidate = {
  encoding: string
  invalid: number // U+FFFD or C1 controls in the decoded text
  text: string // decoded non-ASCII lines, capped, for scoring
  plaus: number
  chardet: number
  score: number
  reading: Reading
  sameAs: string[] // other candidates that decode this file to the same text
}

type Legacy = {
  ranked: Candidate[] // strictly decoding candidates best first (all, by fewest invalid, when none is clean)
  clean: boolean
  invalidUtf8Lines: number
  utf8Lines: Buffer[] // non-ASCII lines that are valid UTF-8 with multi-byte characters
  utf8LineCount: number
  invalidLines: Buffer[] // the first lines that are not valid UTF-8
}

function analyseLegacy(pieces: Piece[]): Legacy {
  const parts: Part[] = []
  const utf8Lines: Buffer[] = []
  const invalidLines: Buffer[] = []
  let utf8LineCount = 0
  let invalidUtf8Lines = 0
  const hist = new Array<number>(256).fill(0)
  for (const piece of pieces) {
    let bytes = piece.bytes
    let unaligned = false
    if (piece.cutStart) {
      // A line break is never part of a multi-byte character in these encodings: start after one.
      const nl = bytes.indexOf(0x0a)
      if (nl >= 0) bytes = bytes.subarray(nl + 1)
      else unaligned = true
    }
    const lines: Buffer[] = []
    let start = 0
    while (start < bytes.length) {
      let end = bytes.indexOf(0x0a, start)
      const last = end < 0
      if (last) end = bytes.length
      const line = bytes.subarray(start, end)
      if (hasHighByte(line)) {
        lines.push(line)
        for (let i = 0; i < line.length; i++) hist[line[i]!]!++
        const checked = last && piece.cutEnd ? line.subarray(0, line.length - incompleteUtf8Tail(line)) : line
        const validFrom = unaligned && lines.length === 1 ? leadingContinuations(checked) : 0
        if (isUtf8(checked.subarray(validFrom))) {
          if (countLeadBytes(checked) > 0) {
            utf8LineCount++
            if (utf8Lines.length < 2000) utf8Lines.push(checked)
          }
        } else {
          invalidUtf8Lines++
          if (invalidLines.length < 200) invalidLines.push(checked)
        }
      }
      start = end + 1
    }
    if (lines.length === 0) continue
    const joined = Buffer.concat(lines.flatMap((l, i) => (i === 0 ? [l] : [NEWLINE, l])))
    parts.push({ bytes: joined, cutEnd: piece.cutEnd && !bytes.subarray(-1).equals(NEWLINE), unaligned, lines: lines.length })
  }

  const chardetSample = Buffer.concat(parts.map((p, i) => p.bytes.subarray(0, i === 0 ? CHARDET_HEAD_BYTES : CHARDET_TAIL_BYTES)))
  const matches = analyse(chardetSample)
  const chardetConf = new Map<string, number>()
  const candidates = new Set(BASE_CANDIDATES)
  for (const m of matches) {
    const name = m.name.toLowerCase()
    if (name.startsWith('utf') || name === 'ascii' || name.startsWith('iso-2022')) continue
    const family = CHARDET_FAMILIES[name] ?? [name]
    for (const enc of family) {
      if (!iconv.encodingExists(enc)) continue
      candidates.add(enc)
      chardetConf.set(enc, Math.max(chardetConf.get(enc) ?? 0, m.confidence))
    }
  }

  const all: Candidate[] = []
  for (const encoding of candidates) {
    const decoded = MULTI_BYTE.has(encoding) ? decodeMultiByte(encoding, parts) : decodeSingleByte(encoding, parts, hist)
    all.push({ encoding, ...decoded, plaus: 0, chardet: chardetConf.get(encoding) ?? 0, score: 0, reading: EMPTY_READING, sameAs: [] })
  }
  const clean = all.filter((c) => c.invalid === 0)
  const pool = clean.length > 0 ? clean : all

  for (const c of pool) {
    c.reading = readText(c.text, c.encoding)
    c.plaus = c.reading.sum / (c.reading.chars + SHRINK)
  }
  // chardet has no model for Mac Roman: ask it about the same text written in windows-1252.
  const mac = pool.find((c) => c.encoding === 'macintosh')
  if (mac && mac.reading.chars > 0) {
    const transcoded = iconv.encode(iconv.decode(chardetSample, 'macintosh'), 'windows-1252')
    const western = analyse(transcoded).filter((m) => m.name === 'ISO-8859-1' || m.name === 'windows-1252')
    mac.chardet = Math.max(0, ...western.map((m) => m.confidence))
  }
  for (const c of pool) {
    c.score = c.plaus + (CHARDET_WEIGHT * c.chardet) / 100 + (c.encoding === 'windows-1252' ? WESTERN_BONUS : 0)
  }

  // Candidates that give the same text are one answer.
  const groups = sameTextGroups(pool, parts, hist)
  const ranked: Candidate[] = []
  for (const group of groups) {
    const name = SAME_TEXT_PREFERENCE.find((p) => group.some((c) => c.encoding === p))
    const top = group.reduce((a, b) => (b.score > a.score ? b : a))
    const chosen = name ? group.find((c) => c.encoding === name)! : top
    chosen.score = Math.max(...group.map((c) => c.score))
    chosen.sameAs = group.filter((c) => c !== chosen).map((c) => c.encoding)
    ranked.push(chosen)
  }
  ranked.sort(clean.length > 0 ? (a, b) => b.score - a.score : (a, b) => a.invalid - b.invalid || b.score - a.score)
  // A few non-ASCII characters cannot tell languages apart (a lone "©" scores as a Czech "Š"):
  // the common case wins when it reads them without a defect.
  const western = ranked.findIndex((c) => c.encoding === 'windows-1252')
  if (clean.length > 0 && western > 0 && ranked[western]!.reading.chars <= FEW_CHARS && ranked[western]!.reading.sum >= 0) {
    ranked.unshift(...ranked.splice(western, 1))
  }
  return { ranked, clean: clean.length > 0, invalidUtf8Lines, utf8Lines, utf8LineCount, invalidLines }
}

const NEWLINE = Buffer.from('\n')

function hasHighByte(line: Buffer): boolean {
  for (let i = 0; i < line.length; i++) if (line[i]! >= 0x80) return true
  return false
}

const BAD_CHARS = /[\ufffd\u0080-\u009f]/g

function countBad(text: string): number {
  return text.match(BAD_CHARS)?.length ?? 0
}

const sbcsTables = new Map<string, string>()

/** The 256 characters a single-byte encoding maps its bytes to. */
function sbcsTable(encoding: string): string {
  let table = sbcsTables.get(encoding)
  if (!table) {
    table = iconv.decode(Buffer.from(Array.from({ length: 256 }, (_, i) => i)), encoding, { stripBOM: false })
    sbcsTables.set(encoding, table)
  }
  return table
}

function decodeSingleByte(encoding: string, parts: Part[], hist: number[]): { invalid: number; text: string } {
  const table = sbcsTable(encoding)
  let invalid = 0
  for (let b = 0x80; b < 256; b++) if (hist[b]! > 0 && isBadChar(table.charCodeAt(b))) invalid += hist[b]!
  const text = parts.map((p, i) => iconv.decode(p.bytes.subarray(0, i === 0 ? SCORE_HEAD_BYTES : SCORE_TAIL_BYTES), encoding, { stripBOM: false })).join('\n')
  return { invalid, text }
}

function isBadChar(code: number): boolean {
  return code === 0xfffd || (code >= 0x80 && code <= 0x9f)
}

function decodeMultiByte(encoding: string, parts: Part[]): { invalid: number; text: string } {
  let invalid = 0
  const texts: string[] = []
  parts.forEach((part, i) => {
    const cap = i === 0 ? SCORE_HEAD_BYTES : SCORE_TAIL_BYTES
    // A tail without a line break may start on a trail byte: take the better of both alignments.
    const options = part.unaligned ? [0, 1] : [0]
    let best: { invalid: number; text: string } | null = null
    for (const shift of options) {
      const d = decodeStream(encoding, part.bytes.subarray(shift), part.cutEnd, cap, best ? best.invalid : Infinity)
      if (!best || d.invalid < best.invalid) best = d
    }
    invalid += best!.invalid
    texts.push(best!.text)
  })
  return { invalid, text: texts.join('\n') }
}

/** Decodes in chunks; keeps the first `cap` bytes' worth of text; stops early once it is worse than `stopAbove`. */
function decodeStream(encoding: string, bytes: Buffer, cutEnd: boolean, cap: number, stopAbove: number): { invalid: number; text: string } {
  const decoder = iconv.getDecoder(encoding, { stripBOM: false })
  let invalid = 0
  let text = ''
  for (let at = 0; at < bytes.length; at += DECODE_CHUNK) {
    const chunk = decoder.write(bytes.subarray(at, at + DECODE_CHUNK))
    invalid += countBad(chunk)
    if (at < cap) text += chunk
    // A candidate that already fails is out; its count only matters when all fail, and then roughly.
    if (invalid > 0 && at + DECODE_CHUNK >= cap) break
    if (invalid > stopAbove) break
  }
  if (!cutEnd) {
    const rest = decoder.end() ?? ''
    invalid += countBad(rest)
    text += rest
  }
  return { invalid, text }
}

function sameTextGroups(pool: Candidate[], parts: Part[], hist: number[]): Candidate[][] {
  const groups: Candidate[][] = []
  for (const c of pool) {
    const group = groups.find((g) => sameText(g[0]!, c, hist))
    if (group) group.push(c)
    else groups.push([c])
  }
  return groups
}

function sameText(a: Candidate, b: Candidate, hist: number[]): boolean {
  if (MULTI_BYTE.has(a.encoding) || MULTI_BYTE.has(b.encoding)) return a.encoding === b.encoding || (MULTI_BYTE.has(a.encoding) && MULTI_BYTE.has(b.encoding) && a.text === b.text && a.invalid === b.invalid)
  const ta = sbcsTable(a.encoding)
  const tb = sbcsTable(b.encoding)
  for (let x = 0x80; x < 256; x++) if (hist[x]! > 0 && ta[x] !== tb[x]) return false
  return true
}

// ---------------------------------------------------------------------------------------------
// Mixed files

function mixedUtf8(legacy: Legacy, best: Candidate): EncodingGuess | null {
  if (legacy.utf8Lines.length === 0) return null
  const asUtf8 = readText(legacy.utf8Lines.map((l) => l.toString('utf8')).join('\n'), 'utf-8')
  const asLegacy = readText(legacy.utf8Lines.map((l) => iconv.decode(l, best.encoding)).join('\n'), best.encoding)
  const p8 = asUtf8.sum / (asUtf8.chars + SHRINK)
  const pl = asLegacy.sum / (asLegacy.chars + SHRINK)
  if (!(p8 > 0.4 && p8 >= pl + 0.3)) return null
  const good = legacy.utf8LineCount
  const bad = legacy.invalidUtf8Lines
  const stray = strayEncoding(legacy)
  return guess('utf-8', false,
    `mixed encodings: ${good} line${good === 1 ? ' is' : 's are'} valid UTF-8 (garbled if read as ${best.encoding}) and ${bad} ${bad === 1 ? 'is' : 'are'} not ` +
    `(${bad === 1 ? 'it reads' : 'they read'} as ${stray}); read as UTF-8, the ${bad} will be reported — choose ${stray} to load ${bad === 1 ? 'it' : 'them'} instead, at the cost of the UTF-8 lines`,
    [stray, ...legacy.ranked.map((c) => c.encoding)])
}

/** What the lines that are not UTF-8 read as on their own (the whole file's best reading is swayed by the UTF-8 lines). */
function strayEncoding(legacy: Legacy): string {
  const strays = Buffer.concat(legacy.invalidLines.flatMap((line) => [line, NEWLINE]))
  return analyseLegacy(toPieces([strays])).ranked[0]?.encoding ?? 'windows-1252'
}

// ---------------------------------------------------------------------------------------------
// Reasons

function legacyReason(legacy: Legacy): string {
  const [best, ...rest] = legacy.ranked as [Candidate, ...Candidate[]]
  const same = best.sameAs.length ? `; ${best.sameAs.join(' and ')} read${best.sameAs.length === 1 ? 's' : ''} these bytes the same` : ''
  if (!legacy.clean) {
    return `no valid UTF-8 and no encoding decodes every byte; ${best.encoding} fits best (${best.invalid} undecodable character${best.invalid === 1 ? '' : 's'}, whose rows will be reported) and reads as ${describeReading(best)}${same}`
  }
  const few = best.reading.chars <= 3 ? `, though with only ${best.reading.chars} non-ASCII character${best.reading.chars === 1 ? '' : 's'} this is a best guess` : ''
  const others = rest.slice(0, 2).map((c) => `${c.encoding} also decodes but ${defectText(c, best)}`)
  const also = others.length ? ` (${others.join('; ')})` : ''
  return `no valid UTF-8; decodes strictly as ${best.encoding} and reads as ${describeReading(best)}${few}${also}${same}`
}

function describeReading(c: Candidate): string {
  const r = c.reading
  const script = dominantScript(r)
  switch (script) {
    case 'Latin': return r.language ? `Latin text (${r.language} letters)` : 'Latin text'
    case 'Han':
      return c.encoding === 'big5' ? 'traditional Chinese text' : c.encoding === 'shift_jis' || c.encoding === 'euc-jp' ? 'Japanese text' : c.encoding === 'euc-kr' ? 'Korean text with hanja' : 'Chinese text'
    case 'Kana': return 'Japanese text'
    case 'Hangul': return 'Korean text'
    case '': return 'text'
    default: return `${script} text`
  }
}

function dominantScript(r: Reading): string {
  let best = ''
  let n = 0
  for (const [script, count] of Object.entries(r.scripts)) if (count > n) [best, n] = [script, count]
  if (best === 'Han' && (r.scripts.Kana ?? 0) > 0 && (r.scripts.Kana ?? 0) >= n * 0.05) return 'Kana'
  return best
}

const DEFECT_TEXT: Record<keyof Defects, string> = {
  invalid: 'gives undecodable characters',
  box: 'gives box-drawing characters',
  symbols: 'puts symbols such as {x} inside words',
  case: 'reads as mixed-case gibberish such as {x}',
  mix: 'mixes scripts inside words such as {x}',
  rare: 'reads as rare ideographs',
  foreignKana: 'puts Japanese kana into Chinese or Korean text',
  halfKana: 'gives stray half-width katakana',
  unlikely: 'gives letters no one language uses together ({x})',
  dense: 'gives words made mostly of accented letters such as {x}',
}

function defectText(c: Candidate, best: Candidate): string {
  let worst: keyof Defects | null = null
  let mass = 0
  for (const key of Object.keys(DEFECT_TEXT) as (keyof Defects)[]) {
    if (c.reading.defects[key] > mass) [worst, mass] = [key, c.reading.defects[key]]
  }
  if (!worst || mass <= best.reading.defects[worst]) {
    return c.plaus < best.plaus - 0.05 ? 'reads less like one language' : "is less likely by chardet's statistics"
  }
  return DEFECT_TEXT[worst].replace('{x}', c.reading.examples[worst] ? `"${c.reading.examples[worst]}"` : '')
}

// ---------------------------------------------------------------------------------------------
// How the decoded text reads

type Defects = {
  invalid: number; box: number; symbols: number; case: number; mix: number; rare: number
  foreignKana: number; halfKana: number; unlikely: number; dense: number
}
type Reading = {
  sum: number // plausibility points, about +1 per character that reads well
  chars: number // non-ASCII characters looked at
  scripts: Record<string, number>
  language: string
  defects: Defects
  examples: Partial<Record<keyof Defects, string>>
}
const EMPTY_READING: Reading = { sum: 0, chars: 0, scripts: {}, language: '', defects: newDefects(), examples: {} }

function newDefects(): Defects {
  return { invalid: 0, box: 0, symbols: 0, case: 0, mix: 0, rare: 0, foreignKana: 0, halfKana: 0, unlikely: 0, dense: 0 }
}

const enum Kind { Boundary, AsciiLetter, Letter, Mark, Symbol, Weird, Box, Bad, CjkPunct }
const enum Script { None, Latin, Cyrillic, Greek, Han, Kana, HalfKana, Hangul, Jamo, Other }
const SCRIPT_NAMES = ['', 'Latin', 'Cyrillic', 'Greek', 'Han', 'Kana', 'Kana', 'Hangul', 'Hangul', 'Other']

type CharInfo = { kind: Kind; script: Script; upper: boolean; lower: boolean; key: string; ch: string }

// Symbols that in running text mostly come from a wrong code page.
const WEIRD = new Set([...'‡†‰ƒˆ˜¨¯´¸˘˙˚˛ˇ˝¤¦¬¹¼½¾◊√∫≈≠≤≥∞∆∂∑∏πΩﬁﬂ¶‹›‚„΅΄ΐΰ'])
// Allowed between two letters: apostrophes, the Catalan middle dot, the soft hyphen.
const IN_WORD_OK = new Set([...'’‘ʼ·\u00ad'])

const infoCache = new Map<number, CharInfo>()

function charInfo(cp: number): CharInfo {
  let info = infoCache.get(cp)
  if (!info) {
    info = classify(cp)
    infoCache.set(cp, info)
  }
  return info
}

function classify(cp: number): CharInfo {
  const ch = String.fromCodePoint(cp)
  const make = (kind: Kind, script = Script.None, key = ch): CharInfo => {
    const lower = ch.toLowerCase()
    const upper = ch.toUpperCase()
    return { kind, script, upper: kind === Kind.Letter || kind === Kind.AsciiLetter ? ch !== lower : false,
      lower: kind === Kind.Letter || kind === Kind.AsciiLetter ? ch !== upper : false, key, ch }
  }
  if (cp < 0x80) return /[A-Za-z]/.test(ch) ? make(Kind.AsciiLetter, Script.Latin) : make(Kind.Boundary)
  if (cp <= 0x9f || cp === 0xfffd || cp === 0xfffe || cp === 0xffff) return make(Kind.Bad)
  if (cp === 0xa0 || cp === 0x3000 || cp === 0xfeff || (cp >= 0x2000 && cp <= 0x200b) || cp === 0x2028 || cp === 0x2029) return make(Kind.Boundary)
  if ((cp >= 0xe000 && cp <= 0xf8ff) || cp >= 0xf0000) return make(Kind.Bad)
  if (cp >= 0x2500 && cp <= 0x25ff) return make(Kind.Box)
  if (WEIRD.has(ch) || (cp >= 0x2c6 && cp <= 0x2df)) return make(Kind.Weird)
  if (cp >= 0xff61 && cp <= 0xff9f) return make(Kind.Letter, Script.HalfKana)
  if ((cp >= 0x3001 && cp <= 0x303f && cp !== 0x3005) || (cp >= 0xff01 && cp <= 0xff60) || (cp >= 0xffe0 && cp <= 0xffee)) return make(Kind.CjkPunct)
  if (cp === 0x30fc || cp === 0x30fb) return make(Kind.Letter, Script.Kana)
  if (cp === 0xaa || cp === 0xba || cp === 0xb5) return make(Kind.Symbol)
  if (/\p{L}/u.test(ch)) {
    if (/\p{Script=Latin}/u.test(ch)) return make(Kind.Letter, Script.Latin, ch === 'İ' ? 'ı' : ch.toLowerCase())
    if (/\p{Script=Cyrillic}/u.test(ch)) return make(Kind.Letter, Script.Cyrillic, ch.toLowerCase())
    if (/\p{Script=Greek}/u.test(ch)) return make(Kind.Letter, Script.Greek, ch.toLowerCase().normalize('NFD').replace(/\p{M}/gu, ''))
    if (/\p{Script=Han}/u.test(ch)) return make(Kind.Letter, Script.Han)
    if (/[\p{Script=Hiragana}\p{Script=Katakana}]/u.test(ch)) return make(Kind.Letter, Script.Kana)
    if (cp >= 0xac00 && cp <= 0xd7a3) return make(Kind.Letter, Script.Hangul)
    if (/\p{Script=Hangul}/u.test(ch)) return make(Kind.Letter, Script.Jamo)
    return make(Kind.Letter, Script.Other)
  }
  if (/[\p{M}\p{Cf}]/u.test(ch)) return make(Kind.Mark)
  if (/\p{Cc}/u.test(ch)) return make(Kind.Bad)
  return make(Kind.Symbol)
}

// Letter frequencies (per cent, lower case) for the unigram check of Cyrillic and Greek readings.
const CYRILLIC_FREQ: Record<string, number> = {
  о: 10.97, е: 8.45, а: 8.01, и: 7.35, н: 6.7, т: 6.26, с: 5.47, р: 4.73, в: 4.54, л: 4.4, к: 3.49, м: 3.21,
  д: 2.98, п: 2.81, у: 2.62, я: 2.01, ы: 1.9, ь: 1.74, г: 1.7, з: 1.65, б: 1.59, ч: 1.44, й: 1.21, х: 0.97,
  ж: 0.94, ш: 0.73, ю: 0.64, ц: 0.48, щ: 0.36, э: 0.32, ф: 0.26, ъ: 0.04, ё: 0.2,
  і: 2.5, ї: 0.6, є: 0.4, ґ: 0.1, ў: 0.3, ј: 1.5, љ: 0.4, њ: 0.4, ђ: 0.2, ћ: 0.3, џ: 0.1, ѓ: 0.1, ќ: 0.1, ѕ: 0.05,
}
const GREEK_FREQ: Record<string, number> = {
  α: 12, ο: 9.8, ι: 8.6, ε: 8, τ: 8, σ: 5.5, ς: 2.2, ν: 6.6, η: 5, υ: 4.5, ρ: 4.5, π: 4, κ: 4, μ: 3.4,
  λ: 2.8, ω: 2, γ: 1.8, δ: 1.6, θ: 1.3, χ: 1.1, φ: 0.9, β: 0.8, ξ: 0.4, ζ: 0.4, ψ: 0.15,
}
type Unigram = { score: Map<string, number>; floor: number }
const unigrams = new Map<Script, Unigram>()

/** Per-letter points: 1 on average over real text, less for letters the language rarely uses. */
function unigram(script: Script): Unigram {
  let u = unigrams.get(script)
  if (!u) {
    const freq = script === Script.Cyrillic ? CYRILLIC_FREQ : GREEK_FREQ
    const total = Object.values(freq).reduce((a, b) => a + b, 0)
    const n = Object.keys(freq).length
    const raw = (p: number) => Math.max(-1.2, Math.min(1, Math.log2((p / total) * n) / 2))
    const expected = Object.values(freq).reduce((a, p) => a + (p / total) * raw(p), 0)
    const score = new Map(Object.entries(freq).map(([k, p]) => [k, 1 + raw(p) - expected]))
    u = { score, floor: 1 - 1.2 - expected }
    unigrams.set(script, u)
  }
  return u
}

// Accented letters each language writes; a reading whose letters one language (or two) covers is likelier.
const LATIN_LANGUAGES: Record<string, string> = {
  French: 'àâæçéèêëîïôœùûüÿ', German: 'äöüß', Spanish: 'áéíñóúü', Portuguese: 'áâãàçéêíóôõú',
  Italian: 'àèéìíîòóùú', Catalan: 'àçèéíïòóúü', Dutch: 'áéèëïóöü', Swedish: 'åäöé', Danish: 'æøåé',
  Finnish: 'äöåšž', Icelandic: 'áæéíóöúýðþ', Estonian: 'äöõüšž', Czech: 'áčďéěíňóřšťúůýž',
  Slovak: 'áäčďéíĺľňóôŕšťúýž', Polish: 'ąćęłńóśźż', Hungarian: 'áéíóöőúüű', Romanian: 'ăâîșşțţ',
  Croatian: 'čćđšž', Slovenian: 'čšž', Turkish: 'âçğıîöşü', Lithuanian: 'ąčęėįšųūž', Latvian: 'āčēģīķļņšūž',
  Albanian: 'çë', Welsh: 'âêîôûŵŷ',
}
const LANGUAGE_SETS = Object.entries(LATIN_LANGUAGES).map(([name, letters]) => [name, new Set([...letters])] as const)
const PAIR_PENALTY = 0.1

/** Best share of the letters that one language (or, less likely, two) writes. */
function latinFit(counts: Map<string, number>): { inLanguage: number; language: string; outside: string[] } {
  let total = 0
  for (const n of counts.values()) total += n
  if (total === 0) return { inLanguage: 0, language: '', outside: [] }
  const covered = (sets: Set<string>[]) => {
    let n = 0
    for (const [k, c] of counts) if (sets.some((s) => s.has(k))) n += c
    return n
  }
  let best = { fit: -1, inLanguage: 0, language: '', sets: [] as Set<string>[] }
  for (let i = 0; i < LANGUAGE_SETS.length; i++) {
    const [name, set] = LANGUAGE_SETS[i]!
    const n = covered([set])
    if (n / total > best.fit) best = { fit: n / total, inLanguage: n, language: name, sets: [set] }
    for (let j = i + 1; j < LANGUAGE_SETS.length; j++) {
      const [name2, set2] = LANGUAGE_SETS[j]!
      const m = covered([set, set2])
      if (m / total - PAIR_PENALTY > best.fit) best = { fit: m / total - PAIR_PENALTY, inLanguage: m, language: `${name}/${name2}`, sets: [set, set2] }
    }
  }
  const outside = [...counts.keys()].filter((k) => !best.sets.some((s) => s.has(k)))
  return { inLanguage: best.inLanguage, language: best.language, outside }
}

// Ideographs and syllables a text in each encoding mostly uses: its level-1 (most frequent) set.
let commonSets: { gb: Set<string>; big5: Set<string>; jis: Set<string>; hangul: Set<string>; any: Set<string> } | null = null

function rowsText(encoding: string, leads: [number, number], trails: [number, number][], until = 0xffff): string {
  const bytes: number[] = []
  for (let lead = leads[0]; lead <= leads[1]; lead++) {
    for (const [a, b] of trails) {
      for (let t = a; t <= b; t++) if (((lead << 8) | t) <= until) bytes.push(lead, t)
    }
  }
  return iconv.decode(Buffer.from(bytes), encoding)
}

function common() {
  if (!commonSets) {
    const set = (text: string) => new Set([...text].filter((c) => c !== '\ufffd'))
    const gb = set(rowsText('gbk', [0xb0, 0xd7], [[0xa1, 0xfe]]))
    const big5 = set(rowsText('big5', [0xa4, 0xc6], [[0x40, 0x7e], [0xa1, 0xfe]], 0xc67e))
    const jis = set(rowsText('euc-jp', [0xb0, 0xcf], [[0xa1, 0xfe]]))
    const hangul = set(rowsText('euc-kr', [0xb0, 0xc8], [[0xa1, 0xfe]]))
    commonSets = { gb, big5, jis, hangul, any: new Set([...gb, ...big5, ...jis]) }
  }
  return commonSets
}

type Profile = { han: Set<string> | null; kana: boolean; hangul: boolean; cjk: boolean }

function profileOf(encoding: string): Profile {
  const c = common()
  switch (encoding) {
    case 'gb18030': case 'gbk': return { han: c.gb, kana: false, hangul: false, cjk: true }
    case 'big5': return { han: c.big5, kana: false, hangul: false, cjk: true }
    case 'shift_jis': case 'euc-jp': return { han: c.jis, kana: true, hangul: false, cjk: true }
    case 'euc-kr': return { han: null, kana: false, hangul: true, cjk: true }
    case 'utf-8': return { han: c.any, kana: true, hangul: true, cjk: true }
    default: return { han: null, kana: false, hangul: false, cjk: false }
  }
}

/** Scores decoded text: for each non-ASCII character, how well it fits the word it is in. */
function readText(text: string, encoding: string): Reading {
  const profile = profileOf(encoding)
  const defects = newDefects()
  const examples: Reading['examples'] = {}
  const scripts: Record<string, number> = {}
  const latin = new Map<string, number>()
  let sum = 0
  let chars = 0
  const token: CharInfo[] = []

  const note = (key: keyof Defects, amount: number, word: CharInfo[]) => {
    defects[key] += amount
    sum -= amount
    if (!examples[key]) examples[key] = word.map((c) => c.ch).join('').slice(0, 24)
  }

  const flush = () => {
    const m = token.length
    if (m === 0) return
    let letters = 0
    let latinNonAscii = 0
    let allLatin = true
    const onlyHalfKana = token.every((c) => c.script === Script.HalfKana || c.kind !== Kind.Letter)
    for (let i = 0; i < m; i++) {
      const c = token[i]!
      if (c.kind === Kind.AsciiLetter || c.kind === Kind.Letter) {
        letters++
        if (c.script !== Script.Latin) allLatin = false
      }
      if (c.kind === Kind.AsciiLetter || c.kind === Kind.Boundary) continue
      if (c.kind === Kind.Mark) continue
      chars++
      const prev = token[i - 1]
      const next = token[i + 1]
      const prevLetter = prev !== undefined && (prev.kind === Kind.Letter || prev.kind === Kind.AsciiLetter)
      const nextLetter = next !== undefined && (next.kind === Kind.Letter || next.kind === Kind.AsciiLetter)
      switch (c.kind) {
        case Kind.Bad: note('invalid', 6, token); break
        case Kind.Box: note('box', 5, token); break
        case Kind.Weird:
          if (prevLetter && nextLetter) note('symbols', 5, token)
          else if (prevLetter || nextLetter) note('symbols', 1.5, token)
          else note('symbols', 0.5, token)
          break
        case Kind.Symbol:
          if (prevLetter && nextLetter && !IN_WORD_OK.has(c.ch)) note('symbols', 4, token)
          break
        case Kind.CjkPunct:
          sum += profile.cjk ? 0.5 : -1
          break
        case Kind.Letter: {
          scripts[SCRIPT_NAMES[c.script]!] = (scripts[SCRIPT_NAMES[c.script]!] ?? 0) + 1
          switch (c.script) {
            case Script.Latin:
              latin.set(c.key, (latin.get(c.key) ?? 0) + 1)
              latinNonAscii++
              break
            case Script.Cyrillic: case Script.Greek: {
              const u = unigram(c.script)
              sum += u.score.get(c.key) ?? u.floor
              break
            }
            case Script.Han:
              if (profile.han?.has(c.ch)) sum += 1
              else if (profile.han === null && profile.hangul) sum += 0 // hanja in Korean text: possible, not telling
              else note('rare', 1, token)
              break
            case Script.Kana:
              if (profile.kana) sum += 1
              else note('foreignKana', 1, token)
              break
            case Script.HalfKana:
              if (profile.kana && onlyHalfKana) sum += 0.5
              else note('halfKana', profile.kana ? 2 : 3, token)
              break
            case Script.Hangul:
              if (profile.hangul && common().hangul.has(c.ch)) sum += 1
              else note('rare', profile.hangul ? 1 : 2, token)
              break
            case Script.Jamo: note('rare', 2, token); break
            default: sum += 0.6
          }
          break
        }
      }
      // Between this letter and the one before it.
      if (c.kind === Kind.Letter && prevLetter) {
        const a = prev.script
        const b = c.script
        if (a !== b && !compatibleScripts(a, b)) note('mix', a === Script.Latin || b === Script.Latin ? (isCjk(a) || isCjk(b) ? 0.5 : 3) : 3, token)
        else if (prev.lower && c.upper) note('case', 3, token)
        else if (c.upper && prev.upper && next?.lower && i >= 1) note('case', 2, token)
      }
      if (c.kind === Kind.Letter && c.lower && next?.kind === Kind.AsciiLetter && next.upper) note('case', 3, token)
    }
    if (allLatin && letters >= 4 && latinNonAscii / letters > 0.6) note('dense', latinNonAscii, token)
    token.length = 0
  }

  for (let i = 0; i < text.length; i++) {
    let cp = text.charCodeAt(i)
    if (cp < 0x80) {
      if ((cp >= 0x41 && cp <= 0x5a) || (cp >= 0x61 && cp <= 0x7a)) token.push(charInfo(cp))
      else flush()
      continue
    }
    if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < text.length) {
      const lo = text.charCodeAt(i + 1)
      if (lo >= 0xdc00 && lo <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00)
        i++
      }
    }
    const info = charInfo(cp)
    if (info.kind === Kind.Boundary) flush()
    else if (info.kind === Kind.CjkPunct) {
      flush()
      token.push(info)
      flush()
    } else token.push(info)
  }
  flush()

  const fit = latinFit(latin)
  let latinTotal = 0
  for (const n of latin.values()) latinTotal += n
  sum += fit.inLanguage - 0.5 * (latinTotal - fit.inLanguage)
  if (latinTotal > fit.inLanguage) {
    defects.unlikely += 0.5 * (latinTotal - fit.inLanguage) + 0.01
    examples.unlikely = fit.outside.slice(0, 4).join(', ')
  }
  return { sum, chars, scripts, language: latinTotal >= 3 ? fit.language : '', defects, examples }
}

function isCjk(s: Script): boolean {
  return s === Script.Han || s === Script.Kana || s === Script.HalfKana || s === Script.Hangul || s === Script.Jamo
}

function compatibleScripts(a: Script, b: Script): boolean {
  const japanese = (s: Script) => s === Script.Han || s === Script.Kana || s === Script.HalfKana
  if (japanese(a) && japanese(b)) return true
  if ((a === Script.Han && b === Script.Hangul) || (a === Script.Hangul && b === Script.Han)) return true
  return false
}
