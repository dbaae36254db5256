import { createHash, randomUUID } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import { Transform, type TransformCallback } from 'node:stream'

// Every file the gateway keeps lives under one root, named by the gateway, never
// by a request: `<area>/<yyyy-mm-dd>/<uuid><ext>`. Files are written under tmp/
// and renamed into place when complete, so a half-written file is never served.

export const AREAS = ['exports', 'uploads', 'reports'] as const
export type Area = (typeof AREAS)[number]
export type Storage = ReturnType<typeof createStorage>

// Uploads, exports and reports are other people's data: only the gateway's user may read
// them. The root keeps its execute bit for others: the embedded server, run as "postgres"
// when the gateway is root, passes through it to its data directory.
export const FILE_MODE = 0o600
const DIR_MODE = 0o700

const KEY_PATTERN = /^(exports|uploads|reports)\/\d{4}-\d{2}-\d{2}\/[0-9a-f-]{36}(\.[a-z0-9]{1,8}){0,2}$/

export function createStorage(root: string) {
  const tmpDir = path.join(root, 'tmp')
  return { root, tmpDir, prepare, newKey, newTempPath, isKey, pathOf, commit, remove, size }

  async function prepare() {
    await fs.mkdir(root, { recursive: true, mode: 0o711 })
    const { mode } = await fs.stat(root)
    if (mode & 0o066) await fs.chmod(root, mode & ~0o066) // nobody else lists or writes it
    for (const dir of [tmpDir, ...AREAS.map((area) => path.join(root, area))]) {
      await fs.mkdir(dir, { recursive: true, mode: DIR_MODE })
      await fs.chmod(dir, DIR_MODE) // folders made by earlier versions, too: what is inside them is then unreadable to others
    }
  }

  function newKey(area: Area, extension: string): string {
    const day = new Date().toISOString().slice(0, 10)
    return `${area}/${day}/${randomUUID()}${extension}`
  }

  function newTempPath(): string {
    return path.join(tmpDir, `${randomUUID()}.part`)
  }

  /** Whether `key` has the shape of a key we make (no other name is ever read or deleted). */
  function isKey(key: string): boolean {
    return KEY_PATTERN.test(key)
  }

  /** The absolute path of a stored key; throws on anything that is not a key we made. */
  function pathOf(key: string): string {
    if (!isKey(key)) throw new Error(`not a storage key: ${JSON.stringify(key)}`)
    return path.join(root, key)
  }

  /** Moves a finished temp file to its key: after this the file is whole or absent. */
  async function commit(tempPath: string, key: string): Promise<void> {
    const target = pathOf(key)
    await fs.mkdir(path.dirname(target), { recursive: true, mode: DIR_MODE })
    await fs.chmod(tempPath, FILE_MODE) // whoever wrote it, and with whatever umask
    const handle = await fs.open(tempPath, 'r')
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
    await fs.rename(tempPath, target)
  }

  async function remove(keyOrTempPath: string): Promise<void> {
    const file = keyOrTempPath.startsWith(tmpDir + path.sep) ? keyOrTempPath : pathOf(keyOrTempPath)
    await fs.rm(file, { force: true })
  }

  async function size(key: string): Promise<number | null> {
    try {
      return (await fs.stat(pathOf(key))).size
    } catch {
      return null
    }
  }
}

/**
 * A pass-through that hashes (sha256) and counts what goes to a stored file, and
 * fails with `tooLarge()` past `maxBytes`.
 */
export function measureFile(maxBytes = Infinity, tooLarge: () => Error = () => new Error('file too large')) {
  const hash = createHash('sha256')
  let size = 0
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, done: TransformCallback) {
      size += chunk.length
      if (size > maxBytes) return done(tooLarge())
      hash.update(chunk)
      done(null, chunk)
    },
  })
  return Object.assign(stream, { size: () => size, sha256: () => hash.digest('hex') })
}
