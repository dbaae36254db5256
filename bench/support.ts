import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import net from 'node:net'
import { promisify } from 'node:util'

const run = promisify(execFile)

export const seconds = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9
export const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

/** `psql -c "\copy ..."`: the reference, the same server and data. */
export async function psqlCopy(url: string, command: string): Promise<number> {
  const start = process.hrtime.bigint()
  await run('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qc', command], { maxBuffer: 1 << 20 })
  return seconds(start)
}

export async function psqlAvailable(): Promise<boolean> {
  try {
    await run('psql', ['--version'])
    return true
  } catch {
    return false
  }
}

export async function commandAvailable(name: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v ${name}`])
    return true
  } catch {
    return false
  }
}

export { run }

/** Peak resident memory of a process and all its descendants, sampled every 50 ms. */
export function sampleTreeRss(rootPid: number) {
  let peak = 0
  let stopped = false
  const loop = (async () => {
    while (!stopped) {
      const total = await treeRss(rootPid).catch(() => 0)
      peak = Math.max(peak, total)
      await new Promise((r) => setTimeout(r, 50))
    }
  })()
  return {
    reset: () => { peak = 0 },
    peakMb: () => peak / 1024 / 1024,
    stop: async () => { stopped = true; await loop },
  }
}

async function treeRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024
  const children = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')
  const sizes = await Promise.all(children.split(/\s+/).filter(Boolean).map((child) => treeRss(Number(child)).catch(() => 0)))
  return rss + sizes.reduce((a, b) => a + b, 0)
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/** The gateway as a separate process, as an operator runs it. */
export async function startGatewayProcess(env: Record<string, string>): Promise<{ child: ChildProcess; url: string; stop: () => Promise<void> }> {
  const port = await freePort()
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { env: { ...process.env, ...env, PORT: String(port) }, stdio: ['ignore', 'ignore', 'inherit'] })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 60_000
  for (;;) {
    if (Date.now() > deadline) throw new Error('the gateway did not answer /healthz within 60 s')
    const ok = await fetch(`${url}/healthz`).then((r) => r.ok, () => false)
    if (ok) break
    await new Promise((r) => setTimeout(r, 200))
  }
  return {
    child,
    url,
    stop: async () => {
      child.kill('SIGTERM')
      await new Promise((resolve) => child.once('exit', resolve))
    },
  }
}

type Task = { id: string; state: string; error: string | null; progress: { rows: number }; download: string | null; details: { rows?: number; inserted?: number } }

/** Polls a task every 50 ms until it ends. */
export async function waitForTask(url: string, id: string): Promise<Task> {
  for (;;) {
    const task = (await (await fetch(`${url}/api/tasks/${id}`)).json()) as Task
    if (['succeeded', 'failed', 'cancelled'].includes(task.state)) return task
    await new Promise((r) => setTimeout(r, 50))
  }
}
