import { open } from 'node:fs/promises'
import { SAMPLE_BYTES } from './dialect.ts'

/** What detection reads of a file: its start, and its end when the file is longer (where a footer is). */
export type Samples = { head: Buffer; tail: Buffer | null; size: number }

/** The file's first SAMPLE_BYTES and, when it is longer, its last SAMPLE_BYTES. */
export async function readSamples(file: string): Promise<Samples> {
  const handle = await open(file, 'r')
  try {
    const { size } = await handle.stat()
    const head = Buffer.alloc(Math.min(SAMPLE_BYTES, size))
    await handle.read(head, 0, head.length, 0)
    if (size <= SAMPLE_BYTES) return { head, tail: null, size }
    const tail = Buffer.alloc(Math.min(SAMPLE_BYTES, size - SAMPLE_BYTES))
    await handle.read(tail, 0, tail.length, size - tail.length)
    return { head, tail, size }
  } finally {
    await handle.close()
  }
}
