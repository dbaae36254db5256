import { createReadStream } from 'node:fs'
import { Readable } from 'node:stream'
import type { Context } from 'hono'

export type StoredFile = { path: string; size: number; sha256: string; name: string; contentType: string }

/**
 * Serves a finished file the way download tools expect: a strong ETag (its sha256),
 * 304 on If-None-Match, one byte range (206) so `curl -C -` resumes, HEAD without a body.
 */
export function serveFile(c: Context, file: StoredFile): Response {
  const etag = `"${file.sha256}"`
  const headers = new Headers({
    'Content-Type': file.contentType,
    'Content-Disposition': contentDisposition(file.name),
    ETag: etag,
    'Accept-Ranges': 'bytes',
    'Cache-Control': 'private, no-cache',
    'X-Content-Type-Options': 'nosniff',
  })
  const ifNoneMatch = c.req.header('If-None-Match')
  if (ifNoneMatch && ifNoneMatch.split(',').some((tag) => tag.trim() === etag || tag.trim() === '*')) {
    return new Response(null, { status: 304, headers })
  }

  let start = 0
  let end = file.size - 1
  let status = 200
  const range = c.req.header('Range')
  const ifRange = c.req.header('If-Range')
  if (range && (!ifRange || ifRange === etag)) {
    const parsed = parseRange(range, file.size)
    if (parsed === 'unsatisfiable') {
      headers.set('Content-Range', `bytes */${file.size}`)
      return new Response(null, { status: 416, headers })
    }
    if (parsed) {
      ;[start, end] = parsed
      status = 206
      headers.set('Content-Range', `bytes ${start}-${end}/${file.size}`)
    }
  }
  headers.set('Content-Length', String(Math.max(0, end - start + 1)))
  if (c.req.method === 'HEAD' || file.size === 0) return new Response(null, { status, headers })
  const body = Readable.toWeb(createReadStream(file.path, { start, end })) as ReadableStream
  return new Response(body, { status, headers })
}

/** One `bytes=a-b`, `a-` or `-n` range; null (serve it all) for multiple or malformed ranges, as RFC 9110 allows. */
function parseRange(header: string, size: number): [number, number] | 'unsatisfiable' | null {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (!match || (match[1] === '' && match[2] === '')) return null
  if (match[1] === '') {
    const suffix = Number(match[2])
    if (suffix === 0) return 'unsatisfiable'
    return [Math.max(0, size - suffix), size - 1]
  }
  const start = Number(match[1])
  const end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1)
  if (start >= size || end < start) return 'unsatisfiable'
  return [start, end]
}

/** An ASCII fallback plus the exact UTF-8 name (RFC 6266), so odd dataset names survive. */
function contentDisposition(name: string): string {
  const ascii = name.replace(/[^A-Za-z0-9._-]/g, '_')
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`
}
