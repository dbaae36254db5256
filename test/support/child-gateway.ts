import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')

export type ChildGatewayOptions = {
  /** Unset: the child starts its own embedded PostgreSQL under its storage directory. */
  databaseUrl?: string
  /** Reuse a directory (a second gateway taking over the first one's files); default: a new temp dir. */
  storageDir?: string
  env?: Record<string, string>
  /** How long to wait for the "sluice is running" line (an embedded start runs initdb first). */
  startTimeoutMs?: number
}

export type Exit = { code: number | null; signal: NodeJS.Signals | null }

/**
 * A gateway as production runs it: `node --import tsx src/main.ts` in its own process,
 * so a test can kill it with a real signal. Its output is kept for assertions and
 * shown when SLUICE_TEST_LOG is set. The caller removes `storageDir`.
 */
export async function startChildGateway(options: ChildGatewayOptions = {}) {
  const storageDir = options.storageDir ?? await mkdtemp(path.join(os.tmpdir(), 'sluice-child-'))
  const adminToken = options.env?.GATEWAY_ADMIN_TOKEN ?? `sluice_test_${randomBytes(24).toString('hex')}`
  const env: Record<string, string | undefined> = {
    ...process.env, PORT: '0', STORAGE_DIR: storageDir, SEED_DEMO: 'false', GATEWAY_ADMIN_TOKEN: adminToken, ...options.env,
  }
  if (options.databaseUrl) env.DATABASE_URL = options.databaseUrl
  else delete env.DATABASE_URL
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] })
  const spawned = Date.now()
  const stamp = () => `[child ${child.pid} +${Date.now() - spawned} ms]`
  let stdout = ''
  let stderr = ''
  const exited = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  let exit: Exit | null = null
  void exited.then((e) => { exit = e })
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk
    if (process.env.SLUICE_TEST_LOG) process.stderr.write(`${stamp()} ${chunk}`)
  })
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk
    if (process.env.SLUICE_TEST_LOG) process.stderr.write(`${stamp()} stderr: ${chunk}`)
  })

  const url = await new Promise<string>((resolve, reject) => {
    const timeoutMs = options.startTimeoutMs ?? 30_000
    const timer = setTimeout(() => fail(new Error(`the child gateway did not start within ${timeoutMs} ms`)), timeoutMs)
    const onData = () => {
      const found = /sluice is running: open (http:\/\/\S+?)\/\s/.exec(stdout)
      if (found) done(found[1]!)
    }
    let settled = false
    child.stdout.on('data', onData)
    void exited.then((e) => fail(new Error(`the child gateway exited during start (${JSON.stringify(e)})`)))
    function done(value: string) {
      settled = true
      clearTimeout(timer)
      child.stdout.off('data', onData)
      resolve(value)
    }
    function fail(err: Error) {
      if (settled) return
      settled = true
      clearTimeout(timer)
      child.stdout.off('data', onData)
      if (exit === null) child.kill('SIGKILL')
      reject(new Error(`${err.message}\nstdout:\n${stdout}\nstderr:\n${stderr}`))
    }
  })

  return {
    pid: child.pid!,
    url,
    storageDir,
    adminToken,
    output: () => ({ stdout, stderr }),
    /** Null while the process runs. */
    exitStatus: () => exit,
    /** A request as the admin. */
    fetch: (pathname: string, init?: RequestInit) => {
      const headers = new Headers(init?.headers)
      if (!headers.has('Authorization')) headers.set('Authorization', `Bearer ${adminToken}`)
      return fetch(`${url}${pathname}`, { redirect: 'manual', ...init, headers })
    },
    kill: (signal: NodeJS.Signals) => {
      if (exit === null) child.kill(signal)
    },
    /** Resolves with the exit status; rejects if the process is still running after `timeoutMs`. */
    waitForExit: (timeoutMs = 30_000) => new Promise<Exit>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the child gateway did not exit within ${timeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`)), timeoutMs)
      void exited.then((e) => {
        clearTimeout(timer)
        resolve(e)
      })
    }),
  }
}

export type ChildGateway = Awaited<ReturnType<typeof startChildGateway>>
