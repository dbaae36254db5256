// The load part of `npm run bench` (alone: `npm run bench -- load`): 50 clients poll
// task status while 8 exports and 4 imports run. Workers run off the event loop, so a
// status poll should stay fast: target p99 < 50 ms with no errors. The same clients
// then poll the same (finished) tasks with nothing running: the idle baseline, so a
// noisy machine is compared with itself.
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type postgres from 'postgres'
import { buildRowsTable, isFinished, startGatewayProcess, type GatewayProcess, type Task } from './support.ts'

const SETTINGS = {
  clients: Number(process.env.LOAD_CLIENTS ?? 50),
  exports: Number(process.env.LOAD_EXPORTS ?? 8),
  imports: Number(process.env.LOAD_IMPORTS ?? 4),
  /** Rows of the exported table: each export should run for several seconds. */
  exportRows: Number(process.env.LOAD_EXPORT_ROWS ?? 1_000_000),
  importRows: Number(process.env.LOAD_IMPORT_ROWS ?? 200_000),
  /** Two cores: four tasks at once already keep both busy; the other eight wait in the queue. */
  concurrency: Number(process.env.LOAD_TASK_CONCURRENCY ?? 4),
  /** Each client's mean pause between two polls (±50% at random); 0 polls back to back (a saturation test). */
  pollPauseMs: Number(process.env.LOAD_POLL_PAUSE_MS ?? 100),
  idleSeconds: Number(process.env.LOAD_IDLE_SECONDS ?? 10),
  capSeconds: Number(process.env.LOAD_CAP_SECONDS ?? 150),
}
export const LOAD_TARGET_P99_MS = 50

/** What bench/event-loop-probe.mjs answers from inside the gateway process. */
type LoopReport = { p50Ms: number; p99Ms: number; maxMs: number; meanMs: number; utilization: number; servedP50Ms: number; servedP99Ms: number; cpuMs: number; waitingForCpuMs: number }

export type PhaseFigures = {
  seconds: number
  requests: number
  errors: Record<string, number>
  perSecond: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
  maxMs: number
  gatewayLoop: LoopReport
  clientLoopP99Ms: number
}
export type TaskFigures = { id: string; kind: string; state: string; error: string | null; rows: number; waitS: number; runS: number; wallS: number; uploadS?: number }
type Percentiles = ReturnType<typeof percentiles>
export type LoadResult = { settings: typeof SETTINGS; cpus: number; idle: PhaseFigures; load: PhaseFigures & { whileUploading: Percentiles; afterUploads: Percentiles }; tasks: TaskFigures[]; capped: boolean }

/** Builds the data, runs the load and the idle baseline against a gateway of its own, and returns the figures. */
export async function benchLoad(sql: postgres.Sql, databaseUrl: string, work: string): Promise<LoadResult> {
  console.log(`load: building load_rows (${SETTINGS.exportRows.toLocaleString('en-US')} rows) and ${SETTINGS.imports} empty import tables…`)
  await buildRowsTable(sql, 'load_rows', SETTINGS.exportRows)
  const importTables = Array.from({ length: SETTINGS.imports }, (_, i) => `load_import_${i + 1}`)
  for (const table of importTables) await buildRowsTable(sql, table, 0)
  await mkdir(work, { recursive: true })
  const importFile = path.join(work, 'load-import.csv')
  const copy = await sql.unsafe(`copy (select * from load_rows order by id limit ${SETTINGS.importRows}) to stdout (format csv, header)`).readable()
  await pipeline(copy, createWriteStream(importFile))

  const gateway = await startGatewayProcess({
    DATABASE_URL: databaseUrl, STORAGE_DIR: path.join(work, 'storage'), TASK_CONCURRENCY: String(SETTINGS.concurrency), SHUTDOWN_GRACE_SECONDS: '2',
  }, ['--import', './bench/event-loop-probe.mjs', ...(process.env.LOAD_CPU_PROFILE === '1' ? ['--cpu-prof', `--cpu-prof-dir=${path.join(work, 'profiles')}`] : [])])
  try {
    const ids: string[] = []
    const tasks = new Map<string, Task>()
    const uploadSeconds = new Map<string, number>()
    let uploadsEndedAt: number | null = null
    const creating = createTasks(gateway, importTables, importFile, ids, uploadSeconds).finally(() => { uploadsEndedAt = performance.now() })
    const deadline = Date.now() + SETTINGS.capSeconds * 1000
    console.log(`load: ${SETTINGS.clients} clients polling while ${SETTINGS.exports} exports and ${SETTINGS.imports} imports run (TASK_CONCURRENCY=${SETTINGS.concurrency})…`)
    const { samples, ...load } = await pollPhase(gateway, () => ids, (task) => tasks.set(task.id, task),
      () => Date.now() > deadline || (uploadsEndedAt !== null && ids.every((id) => tasks.has(id) && isFinished(tasks.get(id)!))))
    await creating
    const capped = Date.now() > deadline
    // The uploads stream through the gateway's event loop (multipart, hashing, writing):
    // polls sent meanwhile share the loop with them, later ones only with the tasks.
    const split = {
      whileUploading: percentiles(samples.filter((s) => s.sentAt < uploadsEndedAt!).map((s) => s.ms)),
      afterUploads: percentiles(samples.filter((s) => s.sentAt >= uploadsEndedAt!).map((s) => s.ms)),
    }

    await new Promise((r) => setTimeout(r, 2_000)) // let the last commits and autovacuum settle
    console.log(`load: idle baseline, the same clients polling the same tasks for ${SETTINGS.idleSeconds} s…`)
    const idleUntil = Date.now() + SETTINGS.idleSeconds * 1000
    const { samples: _, ...idle } = await pollPhase(gateway, () => ids, () => {}, () => Date.now() > idleUntil)
    return { settings: SETTINGS, cpus: os.availableParallelism(), idle, load: { ...load, ...split }, tasks: ids.map((id) => taskFigures(tasks.get(id)!, uploadSeconds.get(id))), capped }
  } finally {
    await gateway.stop()
  }
}

/** The exports are queued first (one request each); the imports upload in parallel, as four clients would. */
async function createTasks(gateway: GatewayProcess, importTables: string[], importFile: string, ids: string[], uploadSeconds: Map<string, number>) {
  for (let i = 0; i < SETTINGS.exports; i++) {
    const res = await gateway.fetch('/api/datasets/load_rows/exports', { method: 'POST' })
    if (res.status !== 202) throw new Error(`export request answered ${res.status}: ${await res.text()}`)
    ids.push(((await res.json()) as Task).id)
  }
  await Promise.all(importTables.map(async (table) => {
    const start = performance.now()
    const res = await gateway.fetch(`/api/datasets/${table}/imports`, {
      method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: Readable.toWeb(createReadStream(importFile)) as never, duplex: 'half',
    } as RequestInit)
    if (res.status !== 202) throw new Error(`import into ${table} answered ${res.status}: ${await res.text()}`)
    const { id } = (await res.json()) as Task
    uploadSeconds.set(id, (performance.now() - start) / 1000)
    ids.push(id)
  }))
}

/**
 * `clients` loops, each: GET /api/tasks/:id (cycling through the task ids, each client
 * from its own place), record the latency or the error, pause, until `isDone`.
 */
async function pollPhase(gateway: GatewayProcess, ids: () => string[], onTask: (task: Task) => void, isDone: () => boolean): Promise<PhaseFigures & { samples: Sample[] }> {
  const samples: Sample[] = []
  const errors: Record<string, number> = {}
  const clientLoop = monitorEventLoopDelay({ resolution: 10 })
  await askProbe(gateway, 'reset')
  clientLoop.enable()
  const start = performance.now()
  await Promise.all(Array.from({ length: SETTINGS.clients }, async (_, client) => {
    for (let turn = client; !isDone(); turn++) {
      const known = ids()
      if (known.length > 0) await pollOnce(known[turn % known.length]!)
      // Jitter (±50%): clients that all pause alike would stay in step and arrive as bursts of 50.
      await new Promise((r) => setTimeout(r, known.length > 0 ? SETTINGS.pollPauseMs * (0.5 + Math.random()) : 20))
    }
  }))
  const seconds = (performance.now() - start) / 1000
  clientLoop.disable()
  const gatewayLoop = await askProbe(gateway, 'report')
  const { count: _, ...latency } = percentiles(samples.map((s) => s.ms))
  return {
    seconds, requests: samples.length, errors, perSecond: samples.length / seconds, ...latency, samples,
    gatewayLoop: gatewayLoop!, clientLoopP99Ms: clientLoop.percentile(99) / 1e6,
  }

  async function pollOnce(id: string) {
    const sent = performance.now()
    try {
      const res = await gateway.fetch(`/api/tasks/${id}`)
      const body = await res.text()
      samples.push({ sentAt: sent, ms: performance.now() - sent })
      if (res.status === 200) onTask(JSON.parse(body) as Task)
      else errors[`HTTP ${res.status}`] = (errors[`HTTP ${res.status}`] ?? 0) + 1
    } catch (err) {
      samples.push({ sentAt: sent, ms: performance.now() - sent }) // a failed request is slow by any measure: keep it in
      const reason = (err as Error & { cause?: { code?: string } }).cause?.code ?? (err as Error).message
      errors[reason] = (errors[reason] ?? 0) + 1
    }
  }
}

/** One poll: when it was sent and how long its answer took. */
type Sample = { sentAt: number; ms: number }

function percentiles(latencies: number[]) {
  const sorted = [...latencies].sort((a, b) => a - b)
  const at = (q: number) => sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] ?? NaN
  return { count: sorted.length, p50Ms: at(0.5), p90Ms: at(0.9), p99Ms: at(0.99), maxMs: sorted.at(-1) ?? NaN }
}

function askProbe(gateway: GatewayProcess, probe: 'reset' | 'report'): Promise<LoopReport | undefined> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the gateway\'s event-loop probe did not answer')), 5_000)
    gateway.child.on('message', function answer(message: { probe: string; report?: LoopReport }) {
      if (message.probe !== probe) return
      clearTimeout(timer)
      gateway.child.off('message', answer)
      resolve(message.report)
    })
    gateway.child.send({ probe })
  })
}

function taskFigures(task: Task, uploadS: number | undefined): TaskFigures {
  const time = (iso: string | null) => (iso ? new Date(iso).getTime() / 1000 : NaN)
  const rows = task.kind === 'import' ? task.details.inserted ?? 0 : task.progress.rows
  return {
    id: task.id, kind: task.kind, state: task.state, error: task.error, rows,
    waitS: time(task.startedAt) - time(task.createdAt), runS: time(task.finishedAt) - time(task.startedAt), wallS: time(task.finishedAt) - time(task.createdAt),
    ...(uploadS === undefined ? {} : { uploadS }),
  }
}

/** The table of both phases, the tasks' times, and the verdict line. Returns whether the target was met. */
export function printLoad(result: LoadResult): boolean {
  const { settings: s, idle, load, tasks } = result
  console.log(`\nload: ${s.clients} clients polling GET /api/tasks/:id (pause ${s.pollPauseMs} ms) while ${s.exports} exports (${s.exportRows.toLocaleString('en-US')} rows each) and ${s.imports} imports (${s.importRows.toLocaleString('en-US')} rows each) run; TASK_CONCURRENCY=${s.concurrency} on ${result.cpus} CPUs\n`)
  const header = ['phase', 's', 'requests', 'errors', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'in gateway p50/p99 ms', 'gateway loop p99/max ms', 'loop busy', 'loop on CPU/waiting for CPU s', 'client loop p99 ms']
  const line = (name: string, f: PhaseFigures) => [
    name, f.seconds.toFixed(1), String(f.requests), String(errorCount(f)), f.perSecond.toFixed(0), f.p50Ms.toFixed(1), f.p90Ms.toFixed(1), f.p99Ms.toFixed(1), f.maxMs.toFixed(1),
    `${f.gatewayLoop.servedP50Ms.toFixed(1)}/${f.gatewayLoop.servedP99Ms.toFixed(1)}`, `${f.gatewayLoop.p99Ms.toFixed(1)}/${f.gatewayLoop.maxMs.toFixed(1)}`, `${(f.gatewayLoop.utilization * 100).toFixed(0)}%`,
    `${(f.gatewayLoop.cpuMs / 1000).toFixed(1)}/${(f.gatewayLoop.waitingForCpuMs / 1000).toFixed(1)}`, f.clientLoopP99Ms.toFixed(1),
  ]
  const lines = [header, line('idle', idle), line('under load', load)]
  const widths = header.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)))
  for (const l of lines) console.log(l.map((cell, i) => cell.padEnd(widths[i]!)).join('  '))
  const part = (p: Percentiles) => `p50 ${p.p50Ms.toFixed(1)} ms, p99 ${p.p99Ms.toFixed(1)} ms (${p.count} polls)`
  console.log(`\nunder load, polls sent while the ${s.imports} uploads streamed through the gateway: ${part(load.whileUploading)}; after: ${part(load.afterUploads)}`)
  for (const [name, f] of [['idle', idle], ['under load', load]] as const) {
    if (errorCount(f) > 0) console.log(`errors ${name}: ${Object.entries(f.errors).map(([reason, n]) => `${reason} ×${n}`).join(', ')}`)
  }
  console.log('')
  for (const kind of ['export', 'import']) {
    const of = tasks.filter((t) => t.kind === kind)
    if (of.length === 0) continue
    const range = (values: number[]) => `${Math.min(...values).toFixed(1)}–${Math.max(...values).toFixed(1)} s`
    const uploads = of.filter((t) => t.uploadS !== undefined).map((t) => t.uploadS!)
    console.log(`${kind}s: ${of.filter((t) => t.state === 'succeeded').length}/${of.length} succeeded; run ${range(of.map((t) => t.runS))}, queued ${range(of.map((t) => t.waitS))}, wall ${range(of.map((t) => t.wallS))}${uploads.length ? `, upload ${range(uploads)}` : ''}`)
  }
  const failed = tasks.filter((t) => t.state !== 'succeeded' || t.rows !== (t.kind === 'export' ? s.exportRows : s.importRows))
  for (const t of failed) console.log(`task ${t.id} (${t.kind}) ${t.state}, ${t.rows} rows${t.error ? `: ${t.error}` : ''}`)
  if (result.capped) console.log(`the load phase hit its cap of ${s.capSeconds} s before every task finished`)
  const met = load.p99Ms < LOAD_TARGET_P99_MS && errorCount(load) === 0 && failed.length === 0 && !result.capped
  console.log(`${met ? 'met   ' : 'MISSED'} status polls under load: p99 ${load.p99Ms.toFixed(1)} ms (target < ${LOAD_TARGET_P99_MS} ms), ${errorCount(load)} errors, ${(load.p99Ms / idle.p99Ms).toFixed(2)}× the idle p99 (${idle.p99Ms.toFixed(1)} ms)`)
  return met
}

const errorCount = (f: PhaseFigures) => Object.values(f.errors).reduce((a, b) => a + b, 0)
