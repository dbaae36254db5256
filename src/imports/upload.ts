import { createWriteStream } from 'node:fs'
import { pipeline as pipelineCallback, Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGunzip } from 'node:zlib'
import busboy from 'busboy'
import { UserError } from '../errors.ts'
import { measureFile, type Storage } from '../storage/index.ts'

export type StoredUpload = { key: string; size: number; sha256: string; fileName: string | null; fields: Record<string, string> }

const GZIP_MAGIC = [0x1f, 0x8b]
const RAW_TYPES = ['text/csv', 'text/plain', 'text/tab-separated-values', 'application/csv', 'application/octet-stream', 'application/gzip', 'application/x-gzip', 'application/vnd.ms-excel']

/**
 * Streams a request body into storage as it arrives: multipart (the first file
 * part; other parts are returned as fields) or a raw CSV body. Gzip, as a `.gz`
 * file or `Content-Encoding: gzip`, is inflated on the way, and `maxBytes` counts
 * the inflated bytes, so a gzip bomb stops at the limit like any large upload.
 * Nothing is left behind when it fails.
 */
export async function storeUpload(request: Request, storage: Storage, maxBytes: number): Promise<StoredUpload> {
  if (!request.body) throw new UserError('NO_FILE', 'The request has no body. Send the CSV file as the body or as a multipart field named "file".', 400)
  const rawContentType = request.headers.get('content-type') ?? ''
  const contentType = rawContentType.toLowerCase() // for matching only: the multipart boundary is case-sensitive
  const encoding = (request.headers.get('content-encoding') ?? 'identity').toLowerCase()
  if (encoding !== 'identity' && encoding !== 'gzip') throw new UserError('BAD_ENCODING', `Content-Encoding "${encoding}" is not supported; send gzip or nothing.`, 415)
  const body = Readable.fromWeb(request.body as never)
  const source = encoding === 'gzip' ? body.pipe(createGunzip()) : body

  if (contentType.startsWith('multipart/form-data')) return storeMultipart(source, rawContentType, storage, maxBytes)
  if (contentType === '' || RAW_TYPES.some((type) => contentType.startsWith(type))) {
    return { ...(await storeStream(source, storage, maxBytes)), fileName: null, fields: {} }
  }
  body.destroy()
  throw new UserError('BAD_CONTENT_TYPE', `Content-Type "${contentType}" is not a CSV upload. Send text/csv, or multipart/form-data with a "file" field.`, 415)
}

function storeMultipart(source: Readable, contentType: string, storage: Storage, maxBytes: number): Promise<StoredUpload> {
  return new Promise((resolve, reject) => {
    const fields: Record<string, string> = {}
    let stored: Promise<Omit<StoredUpload, 'fields' | 'fileName'>> | null = null
    let fileName: string | null = null
    let parser: busboy.Busboy
    try {
      parser = busboy({ headers: { 'content-type': contentType }, limits: { files: 1, fields: 100, fieldSize: 64 * 1024, parts: 110 } })
    } catch {
      return reject(new UserError('BAD_MULTIPART', 'The multipart body could not be read (no boundary).', 400))
    }
    parser.on('field', (name, value) => { fields[name] = value })
    parser.on('file', (name, file, info) => {
      if (name !== 'file' || stored) return file.resume()
      fileName = info.filename ?? null
      stored = storeStream(file, storage, maxBytes)
      stored.catch(() => {}) // reported below, once the whole body is read
    })
    parser.on('error', () => reject(new UserError('BAD_MULTIPART', 'The multipart body is malformed.', 400)))
    parser.on('close', () => {
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
    await pipeline(stream, inflateIfGzip, measure, createWriteStream(tempPath))
    const key = storage.newKey('uploads', '.csv')
    await storage.commit(tempPath, key)
    return { key, size: measure.size(), sha256: measure.sha256() }
  } catch (err) {
    stream.resume() // drain the rest of the request so the client reads our answer
    await storage.remove(tempPath)
    if ((err as { code?: string }).code === 'Z_DATA_ERROR') throw new UserError('BAD_GZIP', 'The file looks gzip-compressed but cannot be inflated.', 400)
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new UserError('DISK_FULL', 'The server has no room for this file right now. Try again later.', 413)
    throw err
  }
}

/** Inflates when the stream starts with gzip's magic bytes, passes it through otherwise. */
async function* inflateIfGzip(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const iterator = source[Symbol.asyncIterator]()
  const first = await iterator.next()
  if (first.done) return
  const all = (async function* () {
    yield first.value
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value
  })()
  if (first.value[0] !== GZIP_MAGIC[0] || first.value[1] !== GZIP_MAGIC[1]) return yield* all
  const gunzip = createGunzip()
  pipelineCallback(Readable.from(all), gunzip, () => {}) // an error on either side destroys gunzip, ending the loop below
  yield* gunzip
}
