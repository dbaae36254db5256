import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { parseConfig } from '../../src/config.ts'
import { startGateway } from '../../src/gateway.ts'

/** A real gateway (HTTP server, dispatcher, piscina pool) on a free port, over `databaseUrl`. */
export async function startTestGateway(databaseUrl: string, env: Record<string, string> = {}) {
  const storageDir = await mkdtemp(path.join(os.tmpdir(), 'sluice-test-storage-'))
  const adminToken = env.GATEWAY_ADMIN_TOKEN ?? `sluice_test_${randomBytes(24).toString('hex')}`
  const { config, problems } = parseConfig({
    PORT: '0', STORAGE_DIR: storageDir, DATABASE_URL: databaseUrl, TASK_LEASE_SECONDS: '5', GATEWAY_ADMIN_TOKEN: adminToken, ...env,
  })
  assert.deepEqual(problems, [])
  // SLUICE_TEST_LOG=1 shows the gateway's own log lines while debugging a test.
  const gateway = await startGateway(config, process.env.SLUICE_TEST_LOG ? (line) => console.error(`[gateway] ${line}`) : () => {})
  return {
    ...gateway,
    storageDir,
    config,
    adminToken,
    /** A request as the admin (Bearer token), unless `init.headers` brings its own Authorization. */
    fetch: (pathname: string, init?: RequestInit) => {
      const headers = new Headers(init?.headers)
      if (!headers.has('Authorization')) headers.set('Authorization', `Bearer ${adminToken}`)
      return fetch(`${gateway.url}${pathname}`, { redirect: 'manual', ...init, headers })
    },
    /** A request with no credentials at all. */
    fetchAnonymously: (pathname: string, init?: RequestInit) => fetch(`${gateway.url}${pathname}`, { redirect: 'manual', ...init }),
    async stop() {
      await gateway.stop(2_000)
      await rm(storageDir, { recursive: true, force: true })
    },
  }
}

export type TestGateway = Awaited<ReturnType<typeof startTestGateway>>

export type TaskJson = {
  id: string
  state: string
  kind: string
  dataset: string
  progress: { rows: number; bytes: number; percent: number; total: number | null }
  download: string | null
  error: string | null
  errorCode: string | null
  attempts: number
  file: { name: string; size: number; sha256: string } | null
}

/** Polls the task's JSON until `until` holds (by default: it finished), failing after `timeoutMs`. */
export async function waitForTask(gateway: TestGateway, id: string, until: (t: TaskJson) => boolean = isFinished, timeoutMs = 30_000): Promise<TaskJson> {
  const deadline = Date.now() + timeoutMs
  let task: TaskJson | null = null
  while (Date.now() < deadline) {
    const res = await gateway.fetch(`/api/tasks/${id}`)
    assert.equal(res.status, 200)
    task = (await res.json()) as TaskJson
    if (until(task)) return task
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`task ${id} did not reach the expected state in ${timeoutMs} ms; last seen: ${JSON.stringify(task)}`)
}

export const isFinished = (t: TaskJson) => ['succeeded', 'failed', 'cancelled'].includes(t.state)

/** Requests an export through the API and waits for it to finish. */
export async function exportVia(gateway: TestGateway, dataset: string, query = ''): Promise<TaskJson> {
  const res = await gateway.fetch(`/api/datasets/${encodeURIComponent(dataset)}/exports${query ? `?${query}` : ''}`, { method: 'POST' })
  const body = await res.json()
  assert.equal(res.status, 202, JSON.stringify(body))
  return waitForTask(gateway, (body as TaskJson).id)
}

/** Signs in like a browser with a form: returns the session cookie and the page's CSRF token. */
export async function signInWithForm(gateway: TestGateway, token = gateway.adminToken): Promise<{ cookie: string; csrf: string }> {
  const form = await gateway.fetchAnonymously('/sign-in?next=/')
  const signInCookie = form.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ')
  const formKey = /name="_csrf" value="([^"]+)"/.exec(await form.text())![1]!
  const res = await gateway.fetchAnonymously('/sign-in', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: signInCookie },
    body: new URLSearchParams({ token, next: '/', _csrf: formKey }),
  })
  assert.equal(res.status, 303, await res.text())
  const session = res.headers.getSetCookie().find((c) => c.startsWith('sluice_session='))
  assert.ok(session, 'a session cookie is set')
  assert.match(session, /HttpOnly/i)
  assert.match(session, /SameSite=Lax/i)
  const cookie = session.split(';')[0]!
  const home = await (await gateway.fetchAnonymously('/', { headers: { Cookie: cookie } })).text()
  const csrf = /name="_csrf" value="([^"]+)"/.exec(home)?.[1]
  assert.ok(csrf, 'signed-in pages carry a CSRF token')
  return { cookie, csrf }
}

/** A new token with the `user` role (no PostgreSQL role of its own), made by the admin. */
export async function newUserToken(gateway: TestGateway, name: string): Promise<string> {
  const res = await gateway.fetch('/api/tokens', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name, role: 'user' }) })
  if (res.status !== 201) throw new Error(`making token ${name}: ${res.status} ${await res.text()}`)
  return ((await res.json()) as { token: string }).token
}
