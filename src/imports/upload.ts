import { createWriteStream } from 'node:fs'
import { pipeline as pipelineCallback, Readable, Transform, type TransformCallback } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGunzip } from 'node:zlib'
import busboy from 'busboy'
import { isUserError, UserError } from '../errors.ts'
import { FILE_MODE, measureFile, type Storage } from '../storage/index.ts'

/**
 * An upload as the HTTP edge hands it over: the request's headers, and its body as a Node
 * stream. `acceptsFormToken`: a browser form's upload carries its CSRF token as the field
 * `_csrf` before the file; when set, the file is stored only after a field it accepts.
 */
export type UploadRequest = { headers: Headers; body: Readable | null; acceptsFormToken?: (value: string) => boolean }

export type StoredUpload = { key: string; size: number; sha256: string; fileName: string | null; fields: Record<string, string> }

const GZIP_MAGIC = [0x1f, 0x8b]
// The reader takes records up to 16 MiB (read-records.ts); a line four times that in bytes
// (four bytes a character covers every encoding read) can never be imported, so a field
// of a gigabyte with no line break stops the upload at once instead of filling the disk.
const MAX_LINE_BYTES = 64 * 1024 * 1024
const RAW_TYPES = ['text/csv', 'text/plain', 'text/tab-separated-values', 'application/csv', 'application/octet-stream', 'application/gzip', 'application/x-gzip', 'application/vnd.ms-excel']

/**
 * Streams a request body into storage as it arrives: multipart (the first file
 * part; other parts are returned as fields) or a raw CSV body. Gzip, as a `.gz`
 * file or `Content-Encoding: gzip`, is inflated on the way, and `maxBytes` counts
 * the inflated bytes, so a gzip bomb stops at the limit like any large upload.
 * Nothing is left behind when it fails.
 */
export async function storeUpload(request: UploadRequest, storage: Storage, maxBytes: number): Promise<StoredUpload> {
  const body = request.body
  if (!body) throw new UserError('NO_FILE', 'The request has no body. Send the CSV file as the body or as a multipart field named "file".', 400)
  const rawContentType = request.headers.get('content-type') ?? ''
  const contentType = rawContentType.toLowerCase() // for matching only: the multipart boundary is case-sensitive
  const encoding = (request.headers.get('content-encoding') ?? 'identity').toLowerCase()
  if (encoding !== 'identity' && encoding !== 'gzip') throw new UserError('BAD_ENCODING', `Content-Encoding "${encoding}" is not supported; send gzip or nothing.`, 415)
  const source = encoding === 'gzip' ? body.pipe(createGunzip()) : body

  if (contentType.startsWith('multipart/form-data')) return storeMultipart(source, rawContentType, storage, maxBytes, request.acceptsFormToken)
  if (request.acceptsFormToken) throw formTokenMissing()
  if (contentType === '' || RAW_TYPES.some((type) => contentType.startsWith(type))) {
    return { ...(await storeStream(source, storage, maxBytes)), fileName: null, fields: {} }
  }
  throw new UserError('BAD_CONTENT_TYPE', `Content-Type "${contentType}" is not a CSV upload. Send text/csv, or multipart/form-data with a "file" field.`, 415)
}

const formTokenMissing = () => new UserError('CSRF', 'This form is out of date (or came from another site). Reload the page and try again.', 403)

function storeMultipart(source: Readable, contentType: string, storage: Storage, maxBytes: number, acceptsFormToken?: (value: string) => boolean): Promise<StoredUpload> {
  return new Promise((resolve, reject) => {
    let tokenRefused = false
    const fields: Record<string, string> = {}
    let stored: Promise<Omit<StoredUpload, 'fields' | 'fileName'>> | null = null
    let fileName: string | null = null
    let moreFiles = false
    let parser: busboy.Busboy
    try {
      parser = busboy({ headers: { 'content-type': contentType }, limits: { files: 1, fields: 100, fieldSize: 64 * 1024, parts: 110 } })
    } catch {
      return reject(new UserError('BAD_MULTIPART', 'The multipart body could not be read (no boundary).', 400))
    }
    // A refused body may already have a whole file stored: remove it before answering.
    const fail = (err: Error) => {
      const discarded = stored ? stored.then((upload) => storage.remove(upload.key), () => {}) : Promise.resolve()
      discarded.catch(() => {}).finally(() => reject(err))
    }
    parser.on('field', (name, value) => { fields[name] = value })
    parser.on('file', (name, file, info) => {
      if (name !== 'file' || stored) return file.resume()
      if (acceptsFormToken && !(typeof fields._csrf === 'string' && acceptsFormToken(fields._csrf))) {
        // Not one byte of a forged form's file reaches the disk; read on so the client hears why.
        tokenRefused = true
        return file.resume()
      }
      fileName = info.filename ?? null
      let fileError: unknown = null // busboy ends the file with an error when the body ends inside it
      file.once('error', (err) => { fileError = err })
      stored = storeStream(file, storage, maxBytes)
      stored.catch((err) => {
        // The failed pipeline destroyed busboy's file stream, and busboy waits for it to be
        // read before parsing on (a full disk hung here): stop parsing, drain the request, answer.
        source.unpipe(parser)
        source.resume()
        const cutShort = err === fileError && !isUserError(err)
        reject(cutShort ? new UserError('BAD_MULTIPART', 'The multipart body is malformed or cut short.', 400) : err)
      })
    })
    parser.on('filesLimit', () => { moreFiles = true })
    let malformed = false
    parser.on('error', () => {
      malformed = true
      fail(new UserError('BAD_MULTIPART', 'The multipart body is malformed or cut short.', 400))
    })
    parser.on('close', () => {
      if (malformed) return // answered by the error
      if (tokenRefused) return reject(formTokenMissing())
      if (moreFiles) return fail(new UserError('TOO_MANY_FILES', 'The form has more than one file. Send one file per upload, in the field named "file".', 400))
      if (!stored) return reject(new UserError('NO_FILE', 'The form has no file. Choose a CSV file in the field named "file".', 400))
      stored.then((upload) => resolve({ ...upload, fileName, fields }), reject)
    })
    source.on('error', (err) => parser.destroy(err))
    source.pipe(parser)
  })
}

/** Writes one file stream to a temp file (inflating gzip), hashing and counting; commits it under a new key. */
async function storeStream(stream: Readable, storage: Storage, maxBytes: number) {
  const tempPath = storage.newTempPath()
  const measure = measureFile(maxBytes, () => new UserError('UPLOAD_TOO_LARGE', `The file is larger than the limit of ${maxBytes.toLocaleString('en-US')} bytes.`, 413))
  try {
    await pipeline(stream, inflateIfGzip, measure, limitLineLength(MAX_LINE_BYTES), createWriteStream(tempPath, { mode: FILE_MODE }))
    const key = storage.newKey('uploads', '.csv')
    await storage.commit(tempPath, key)
    return { key, size: measure.size(), sha256: measure.sha256() }
  } catch (err) {
    stream.resume() // drain the rest of the request so the client reads our answer
    await storage.remove(tempPath)
    if ((err as { code?: string }).code === 'Z_DATA_ERROR') throw new UserError('BAD_GZIP', 'The file looks gzip-compressed but cannot be inflated.', 400)
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new UserError('DISK_FULL', 'The server has no room for this file right now. Try again later.', 507)
    throw err
  }
}

/** Fails when more than `maxBytes` pass without a line break (CR or LF). */
function limitLineLength(maxBytes: number) {
  let run = 0 // bytes since the last line break
  return new Transform({
    transform(chunk: Buffer, _encoding, done: TransformCallback) {
      const last = Math.max(chunk.lastIndexOf(10), chunk.lastIndexOf(13))
      const first = last < 0 ? chunk.length : firstBreak(chunk)
      // Runs between two breaks inside one chunk are shorter than the chunk: only the edges count.
      if (run + first > maxBytes) {
        return done(new UserError('FIELD_TOO_LARGE', `The file has a line longer than ${maxBytes / 2 ** 20} MiB with no line break, which no CSV record here can be: check the file's line breaks and quotes.`, 413))
      }
      run = last < 0 ? run + chunk.length : chunk.length - last - 1
      done(null, chunk)
    },
  })
}

function firstBreak(chunk: Buffer): number {
  const lf = chunk.indexOf(10)
  const cr = chunk.indexOf(13)
  return lf < 0 ? cr : cr < 0 ? lf : Math.min(lf, cr)
}

/** Compressed formats people send instead of CSV: named in the answer rather than parsed as garbage. */
const startsWith = (bytes: number[]) => (chunk: Buffer) => chunk.subarray(0, bytes.length).equals(Buffer.from(bytes))
const OTHER_ARCHIVES = [
  { name: 'ZIP', matches: startsWith([0x50, 0x4b, 0x03, 0x04]) },
  // "BZh", a block size digit, then the block magic (pi's digits): a CSV starting "BZh" stays a CSV.
  { name: 'bzip2', matches: (chunk: Buffer) => /^BZh[1-9]1AY&SY/.test(chunk.subarray(0, 10).toString('latin1')) },
  { name: 'xz', matches: startsWith([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) },
  { name: 'Zstandard', matches: startsWith([0x28, 0xb5, 0x2f, 0xfd]) },
  { name: '7-Zip', matches: startsWith([0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]) },
]

/** Inflates when the stream starts with gzip's magic bytes, refuses other archives, passes CSV through. */
async function* inflateIfGzip(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const iterator = source[Symbol.asyncIterator]()
  const first = await iterator.next()
  if (first.done) return
  const all = (async function* () {
    yield first.value
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value
  })()
  const archive = OTHER_ARCHIVES.find(({ matches }) => matches(first.value))
  if (archive) {
    throw new UserError('UNSUPPORTED_ARCHIVE', `This file is a ${archive.name} archive, which is not read here. Extract the CSV file from it and upload that, or compress the CSV with gzip.`, 415)
  }
  if (first.value[0] !== GZIP_MAGIC[0] || first.value[1] !== GZIP_MAGIC[1]) return yield* all
  const gunzip = createGunzip()
  pipelineCallback(Readable.from(all), gunzip, () => {}) // an error on either side destroys gunzip, ending the loop below
  yield* gunzip
}
