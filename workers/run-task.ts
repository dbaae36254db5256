// Piscina entry: runs one claimed task attempt in a worker thread, with its own
// small database connection, so the web process's event loop stays free.
import os from 'node:os'
import { openDatabase } from '../src/db/client.ts'
import { createStorage } from '../src/storage/index.ts'
import { executeTask, type Outcome } from '../src/tasks/execute.ts'

// Tasks are bulk work; the gateway's event loop answers people. On Linux a nice value
// belongs to a thread, and pid 0 is the calling thread: this lowers this worker thread
// only, so a CPU shared with tasks still runs the HTTP thread first (status polls stay
// fast). Elsewhere pid 0 would be the whole process, so leave it alone there.
if (process.platform === 'linux') {
  try {
    os.setPriority(0, 10)
  } catch {
    // not allowed (a sandbox): the tasks just run at normal priority
  }
}

export type WorkerInput = {
  taskId: string
  runId: string
  databaseUrl: string
  storageDir: string
  schema: string
  fileRetentionHours: number
  statementTimeoutMs: number
}

export default async function runTask(input: WorkerInput): Promise<Outcome> {
  // Sessions of its own: one streams the data, another writes progress and the outcome beside it.
  const name = `sluice task ${input.taskId}`
  // Progress and outcomes are small writes: bounded like requests' (a minute is plenty).
  const sql = openDatabase(input.databaseUrl, { max: 1, applicationName: name, statementTimeoutMs: 60_000 })
  const data = { max: 1, applicationName: name, statementTimeoutMs: input.statementTimeoutMs }
  const reader = openDatabase(input.databaseUrl, { ...data, readOnly: true })
  const writer = openDatabase(input.databaseUrl, data) // connects only if used
  try {
    const storage = createStorage(input.storageDir)
    await storage.prepare() // an operator may have emptied the storage directory while we ran
    return await executeTask({ sql, reader, writer }, storage, input, input.taskId, input.runId)
  } finally {
    // The reader is closed at once: after a COPY its socket may be left paused (see writeExport).
    await Promise.all([sql.end({ timeout: 1 }), reader.end({ timeout: 0 }), writer.end({ timeout: 1 })])
  }
}
