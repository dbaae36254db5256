// Piscina entry: runs one claimed task attempt in a worker thread, with its own
// small database connection, so the web process's event loop stays free.
import { openDatabase } from '../src/db/client.ts'
import { createStorage } from '../src/storage/index.ts'
import { executeTask, type Outcome } from '../src/tasks/execute.ts'

export type WorkerInput = {
  taskId: string
  runId: string
  databaseUrl: string
  storageDir: string
  schema: string
  fileRetentionHours: number
}

export default async function runTask(input: WorkerInput): Promise<Outcome> {
  // Sessions of its own: one streams the data, another writes progress and the outcome beside it.
  const name = `sluice task ${input.taskId}`
  const sql = openDatabase(input.databaseUrl, { max: 1, applicationName: name })
  const reader = openDatabase(input.databaseUrl, { max: 1, applicationName: name, readOnly: true })
  const writer = openDatabase(input.databaseUrl, { max: 1, applicationName: name }) // connects only if used
  try {
    const storage = createStorage(input.storageDir)
    await storage.prepare() // an operator may have emptied the storage directory while we ran
    return await executeTask({ sql, reader, writer }, storage, input, input.taskId, input.runId)
  } finally {
    // The reader is closed at once: after a COPY its socket may be left paused (see writeExport).
    await Promise.all([sql.end({ timeout: 1 }), reader.end({ timeout: 0 }), writer.end({ timeout: 1 })])
  }
}
