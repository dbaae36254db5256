import { open } from 'node:fs/promises'
import { HEAD_SAMPLE_BYTES, TAIL_SAMPLE_BYTES } from './encoding.ts'

/**
 * What detection reads of a file: its start, and its end when the file is longer (where a
 * footer is). The head is large because a code page shows in the non-ASCII bytes, which may
 * be few and far in; the structure is judged on the head's first SAMPLE_BYTES (dialect.ts).
 */
export type Samples = { head: Buffer; tail: Buffer | null; size: number }

/** The file's first HEAD_SAMPLE_BYTES and, when it is longer, its last TAIL_SAMPLE_BYTES. */
export async function readSamples(file: string): Promise<Samples> {
  const handle = await open(file, 'r')
  try {
    const { size } = await handle.stat()
    const head = Buffer.alloc(Math.min(HEAD_SAMPLE_BYTES, size))
    await handle.read(head, 0, head.length, 0)
    if (size <= HEAD_SAMPLE_BYTES) return { head, tail: null, size }
    const tail = Buffer.alloc(Math.min(TAIL_SAMPLE_BYTES, size - HEAD_SAMPLE_BYTES))
    await handle.read(tail, 0, tail.length, size - tail.length)
    return { head, tail, size }
  } finally {
    await handle.close()
  }
}
