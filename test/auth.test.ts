import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import { createLinkSigner } from '../src/auth/index.ts'
import { parseConfig } from '../src/config.ts'
import { startGateway } from '../src/gateway.ts'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { signInWithForm, startTestGateway, waitForTask, type TaskJson, type TestGateway } from './support/gateway.ts'
import { waitFor } from './support/wait.ts'

// Who may get in, and what each may see: through HTTP only, as a script and as a browser would.

let db: TestDatabase
let gateway: TestGateway
const suffix = randomBytes(4).toString('hex')
const clerkRole = `sluice_clerk_${suffix}`

before(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table notes (id int primary key, body text);
    insert into notes select g, 'note ' || g from generate_series(1, 20) g;
    create table salaries (id int primary key, person text, amount int);
    insert into salaries values (1, 'Ada', 100), (2, 'Grace', 200);
    create table regions (id int primary key, region text, amount int);
    insert into regions values (1, 'north', 10), (2, 'south', 20), (3, 'north', 30);
    alter table regions enable row level security;
    create role ${clerkRole} nologin;
    grant usage on schema public to ${clerkRole};
    grant select, insert on notes to ${clerkRole};
    grant select on regions to ${clerkRole};
    create policy north_only on regions for select to ${clerkRole} using (region = 'north');
    create table flaky (id int primary key);
    insert into flaky values (1);
    create table export_switch (allowed boolean not null);
    insert into export_switch values (false);
    create function guarded(n int) returns int language plpgsql as $$
    begin
      if not (select allowed from export_switch) then raise exception 'the export switch is off'; end if;
      return n;
    end $$;
    create view guarded_rows as select guarded(id) as id from flaky;
  `)
  gateway = await startTestGateway(db.url)
})

after(async () => {
  await gateway?.stop()
  await db?.drop()
  // Roles belong to the whole server, not the test database.
  const admin = (await import('postgres')).default(process.env.SLUICE_TEST_ADMIN_URL!, { max: 1, onnotice: () => {} })
  await admin.unsafe(`drop role if exists ${clerkRole}`).catch(() => {})
  await admin.end()
})

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` })

async function createToken(body: object): Promise<{ id: string; token: string; status: number; json: Record<string, unknown> }> {
  const res = await gateway.fetch('/api/tokens', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) })
  const json = (await res.json()) as Record<string, unknown>
  return { id: json.id as string, token: json.token as string, status: res.status, json }
}

async function exportAs(token: string, dataset: string, query = ''): Promise<Response> {
  return gateway.fetch(`/api/datasets/${dataset}/exports${query}`, { method: 'POST', headers: bearer(token) })
}

async function finishedExport(token: string, dataset: string, query = ''): Promise<TaskJson> {
  const res = await exportAs(token, dataset, query)
  assert.equal(res.status, 202, await res.clone().text())
  const { id } = (await res.json()) as TaskJson
  return waitForTask(gateway, id)
}

describe('authentication', () => {
  test('the API answers 401 without a token, with a wrong one, and with a malformed header', async () => {
    for (const headers of [{}, bearer('sluice_not_a_real_token'), { Authorization: 'Basic YWRtaW46YWRtaW4=' }, bearer('x'.repeat(5000))]) {
      for (const [method, path] of [['GET', '/api/tasks'], ['GET', '/api/datasets'], ['POST', '/api/datasets/notes/exports'], ['GET', '/api/tokens']]) {
        const res = await gateway.fetchAnonymously(path!, { method, headers })
        assert.equal(res.status, 401, `${method} ${path} with ${JSON.stringify(headers).slice(0, 60)}`)
        assert.equal(res.headers.get('WWW-Authenticate'), 'Bearer realm="sluice"')
        const body = (await res.json()) as { code: string; error: string }
        assert.equal(body.code, 'UNAUTHENTICATED')
        assert.ok(body.error.length > 10)
      }
    }
    const [queued] = await db.sql`select count(*)::int as n from sluice.tasks`
    assert.equal(queued!.n, 0, 'no request without a valid token queued anything')
  })

  test('pages send signed-out visitors to the sign-in page; health, sign-in and static files stay open', async () => {
    for (const path of ['/', '/datasets/notes', '/tasks/00000000-0000-4000-8000-000000000000', '/tokens']) {
      const res = await gateway.fetchAnonymously(path)
      assert.equal(res.status, 303, path)
      assert.equal(res.headers.get('Location'), `/sign-in?next=${encodeURIComponent(path)}`)
    }
    const post = await gateway.fetchAnonymously('/datasets/notes/exports', { method: 'POST', body: new URLSearchParams({ limit: '1' }) })
    assert.equal(post.status, 401, 'a signed-out form post is refused, not redirected and lost')
    for (const path of ['/healthz', '/sign-in', '/static/htmx.min.js', '/static/sluice.css']) {
      assert.equal((await gateway.fetchAnonymously(path)).status, 200, path)
    }
  })

  test('a browser signs in with a token and keeps a session; the sign-in form cannot be posted from elsewhere', async () => {
    const { cookie } = await signInWithForm(gateway)
    const home = await gateway.fetchAnonymously('/', { headers: { Cookie: cookie } })
    assert.equal(home.status, 200)
    assert.match(await home.text(), /signed in as GATEWAY_ADMIN_TOKEN/)

    // Without the cookie the form set, the post is refused: no signing someone in from another site.
    const forged = await gateway.fetchAnonymously('/sign-in', {
      method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: gateway.adminToken, next: '/', _csrf: 'guess' }),
    })
    assert.equal(forged.status, 403)
    assert.equal(forged.headers.getSetCookie().some((c) => c.startsWith('sluice_session=')), false)
  })

  test('a wrong token on the sign-in form says so; next= never leads off the site', async () => {
    const form = await gateway.fetchAnonymously('/sign-in?next=//evil.example/x')
    const signInCookie = form.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ')
    const html = await form.text()
    assert.match(html, /name="next" value="\/"/, 'an off-site next is replaced by /')
    const formKey = /name="_csrf" value="([^"]+)"/.exec(html)![1]!
    const post = (token: string, next: string) => gateway.fetchAnonymously('/sign-in', {
      method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: signInCookie },
      body: new URLSearchParams({ token, next, _csrf: formKey }),
    })
    const wrong = await post('sluice_wrong', '/')
    assert.equal(wrong.status, 401)
    assert.match(await wrong.text(), /not valid, or it was revoked/)
    for (const next of ['//evil.example/', '/\\evil.example', 'https://evil.example/', '/\t/evil.example', '/\n/evil.example', '/ /evil.example', '\t//evil.example']) {
      const res = await post(gateway.adminToken, next)
      assert.equal(res.status, 303)
      assert.equal(res.headers.get('Location'), '/', next)
    }
  })

  test('sign-out ends the session', async () => {
    const { cookie, csrf } = await signInWithForm(gateway)
    const out = await gateway.fetchAnonymously('/sign-out', {
      method: 'POST', headers: { Cookie: cookie, 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ _csrf: csrf }),
    })
    assert.equal(out.status, 303)
    assert.equal((await gateway.fetchAnonymously('/', { headers: { Cookie: cookie } })).status, 303, 'the old cookie no longer works')
  })
})

describe('CSRF', () => {
  test('a form post with the session cookie needs the page\'s token and this origin', async () => {
    const { cookie, csrf } = await signInWithForm(gateway)
    const post = (fields: Record<string, string>, headers: Record<string, string> = {}) => gateway.fetchAnonymously('/datasets/notes/exports', {
      method: 'POST', headers: { Cookie: cookie, 'Content-Type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(fields),
    })
    const before = await db.sql`select count(*)::int as n from sluice.tasks`
    assert.equal((await post({ limit: '1' })).status, 403, 'no token')
    assert.equal((await post({ limit: '1', _csrf: 'wrong' })).status, 403, 'wrong token')
    assert.equal((await post({ limit: '1', _csrf: csrf }, { Origin: 'https://evil.example' })).status, 403, 'another origin')
    const upload = await gateway.fetchAnonymously('/datasets/notes/uploads', {
      method: 'POST', headers: { Cookie: cookie, 'Content-Type': 'text/csv' }, body: 'id,body\n99,x\n',
    })
    assert.equal(upload.status, 403, 'an upload without the token')
    const after = await db.sql`select count(*)::int as n from sluice.tasks`
    assert.equal(after[0]!.n, before[0]!.n, 'nothing was queued by the refused posts')
    const [uploads] = await db.sql`select count(*)::int as n from sluice.uploads`
    assert.equal(uploads!.n, 0, 'nothing was stored by the refused upload')

    const ok = await post({ limit: '1', _csrf: csrf }, { Origin: gateway.url })
    assert.equal(ok.status, 303)
    assert.match(ok.headers.get('Location')!, /^\/tasks\/[0-9a-f-]{36}$/)
    // A token in the URL leaks through logs and Referer: no longer taken from there.
    assert.equal((await gateway.fetchAnonymously(`/datasets/notes/exports?_csrf=${encodeURIComponent(csrf)}`, {
      method: 'POST', headers: { Cookie: cookie, 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ limit: '1' }),
    })).status, 403, 'a token in the query string')
    assert.equal((await post({ limit: '1', _csrf: csrf }, { Origin: 'null' })).status, 403, 'Origin: null (a sandboxed frame, a data: page)')

    const form = (fields: [string, string][]) => {
      const body = new FormData()
      for (const [name, value] of fields) body.append(name, name === 'file' ? new Blob([value], { type: 'text/csv' }) : value, ...(name === 'file' ? ['notes.csv'] : []) as [])
      return gateway.fetchAnonymously('/datasets/notes/uploads', { method: 'POST', headers: { Cookie: cookie }, body })
    }
    const csvText = 'id,body\n99,x\n'
    for (const [fields, why] of [
      [[['file', csvText]], 'a form upload with no token field'],
      [[['_csrf', 'wrong'], ['file', csvText]], 'a form upload with a wrong token'],
      [[['file', csvText], ['_csrf', csrf]], 'a token after the file: the file would be stored before the check'],
    ] as [[string, string][], string][]) {
      const refused = await form(fields)
      assert.equal(refused.status, 403, why)
      assert.equal(((await refused.json().catch(() => ({}))) as { code?: string }).code ?? 'CSRF', 'CSRF', why)
    }
    assert.equal((await db.sql`select count(*)::int as n from sluice.uploads`)[0]!.n, 0, 'no refused form stored its file')
    assert.deepEqual(await filesUnder(gateway.storageDir, 'uploads', 'tmp'), [], 'nor left it on disk')

    const okUpload = await form([['_csrf', csrf], ['file', csvText]])
    assert.equal(okUpload.status, 303, 'the upload form carries its token as the field before the file')
    const htmxUpload = await gateway.fetchAnonymously('/datasets/notes/uploads', {
      method: 'POST', headers: { Cookie: cookie, 'Content-Type': 'text/csv', 'X-CSRF-Token': csrf }, body: csvText,
    })
    assert.equal(htmxUpload.status, 303, 'or in the header htmx sends')
  })
})

describe('security headers', () => {
  test('pages, API answers and files carry CSP, nosniff and no-framing headers', async () => {
    const task = await finishedExport(gateway.adminToken, 'notes')
    for (const path of ['/', '/api/tasks', '/sign-in', '/static/htmx.min.js', new URL(task.download!).pathname, '/no-such-page']) {
      const res = path === '/sign-in' ? await gateway.fetchAnonymously(path) : await gateway.fetch(path)
      const csp = res.headers.get('Content-Security-Policy') ?? ''
      assert.match(csp, /default-src 'none'/, path)
      assert.match(csp, /script-src 'self'(;|$)/, `${path}: scripts only from this origin, no inline`)
      assert.match(csp, /frame-ancestors 'none'/, path)
      assert.equal(res.headers.get('X-Content-Type-Options'), 'nosniff', path)
      assert.equal(res.headers.get('X-Frame-Options'), 'DENY', path)
      await res.arrayBuffer()
    }
  })
})

describe('tokens and ownership', () => {
  test('a token is marked used at most once a minute, and requests never wait on that write', async () => {
    const user = await createToken({ name: 'poller', role: 'user' })
    const lastUsed = async () => (await db.sql<{ at: Date | null }[]>`select last_used_at as at from sluice.tokens where id = ${user.id}`)[0]!.at
    assert.equal(await lastUsed(), null)
    assert.equal((await gateway.fetch('/api/tasks', { headers: bearer(user.token) })).status, 200)
    const first = await waitFor('the token to be marked used', lastUsed, 5_000)
    assert.equal((await gateway.fetch('/api/tasks', { headers: bearer(user.token) })).status, 200)
    await new Promise((r) => setTimeout(r, 300))
    assert.deepEqual(await lastUsed(), first, 'not written again within the minute')

    // A minute later, with the token's row locked by someone else: the request still answers at once.
    await db.sql`update sluice.tokens set last_used_at = now() - interval '5 minutes' where id = ${user.id}`
    let release!: () => void
    const held = new Promise<void>((resolve) => { release = resolve })
    let locked!: () => void
    const isLocked = new Promise<void>((resolve) => { locked = resolve })
    const holder = db.sql.begin(async (tx) => {
      await tx`select 1 from sluice.tokens where id = ${user.id} for update`
      locked()
      await held
    })
    await isLocked
    try {
      const started = Date.now()
      const res = await gateway.fetch('/api/tasks', { headers: bearer(user.token) })
      assert.equal(res.status, 200)
      assert.ok(Date.now() - started < 3_000, `answered in ${Date.now() - started} ms while the row was locked`)
    } finally {
      release()
      await holder
    }
    await gateway.fetch('/api/tasks', { headers: bearer(user.token) })
    await waitFor('the token to be marked used again', async () => ((await lastUsed())!.getTime() > first!.getTime() ? true : null), 5_000)
  })

  test('only admins manage tokens; a revoked token stops working at once, its sessions too', async () => {
    const user = await createToken({ name: 'script', role: 'user' })
    assert.equal(user.status, 201)
    assert.match(user.token, /^sluice_[A-Za-z0-9_-]{43}$/)
    const [stored] = await db.sql`select token_hash from sluice.tokens where id = ${user.id}`
    assert.notEqual(stored!.token_hash, user.token, 'only a hash is stored')
    assert.equal(JSON.stringify(await db.sql`select * from sluice.tokens`).includes(user.token), false)

    assert.equal((await gateway.fetch('/api/tokens', { headers: bearer(user.token) })).status, 403)
    assert.equal((await gateway.fetch('/api/tokens', { method: 'POST', headers: bearer(user.token) })).status, 403)
    assert.equal((await gateway.fetch('/tokens', { headers: bearer(user.token) })).status, 403)

    const { cookie } = await signInWithForm(gateway, user.token)
    assert.equal((await gateway.fetch('/api/tasks', { headers: bearer(user.token) })).status, 200)
    const revoked = await gateway.fetch(`/api/tokens/${user.id}`, { method: 'DELETE' })
    assert.equal(revoked.status, 200)
    assert.ok(((await revoked.json()) as { revokedAt: string }).revokedAt)
    assert.equal((await gateway.fetch('/api/tasks', { headers: bearer(user.token) })).status, 401)
    assert.equal((await gateway.fetchAnonymously('/', { headers: { Cookie: cookie } })).status, 303, 'its session ended too')

    assert.equal((await createToken({ name: '', role: 'user' })).status, 400)
    assert.equal((await createToken({ name: 'x', role: 'root' })).status, 400)
    const unknownRole = await createToken({ name: 'x', role: 'user', dbRole: 'no_such_role_anywhere' })
    assert.equal(unknownRole.status, 400)
    assert.match(String(unknownRole.json.error), /no PostgreSQL role named "no_such_role_anywhere"/)
  })

  test('a task and its file are visible to the token that made it and to admins only', async () => {
    const alice = await createToken({ name: 'alice', role: 'user' })
    const bob = await createToken({ name: 'bob', role: 'user' })
    const task = await finishedExport(alice.token, 'notes')
    assert.equal(task.state, 'succeeded')
    const paths = [`/api/tasks/${task.id}`, `/api/tasks/${task.id}/download`, `/tasks/${task.id}`, `/tasks/${task.id}/status`]
    for (const path of paths) {
      assert.equal((await gateway.fetch(path, { headers: bearer(alice.token) })).status, 200, `alice: ${path}`)
      assert.equal((await gateway.fetch(path)).status, 200, `admin: ${path}`)
      const res = await gateway.fetch(path, { headers: bearer(bob.token) })
      assert.equal(res.status, 404, `bob: ${path} is not found rather than forbidden`)
    }
    for (const action of ['cancel', 'retry']) {
      assert.equal((await gateway.fetch(`/api/tasks/${task.id}/${action}`, { method: 'POST', headers: bearer(bob.token) })).status, 404, action)
    }
    const bobsList = (await (await gateway.fetch('/api/tasks', { headers: bearer(bob.token) })).json()) as TaskJson[]
    assert.equal(bobsList.some((t) => t.id === task.id), false)
    const alicesList = (await (await gateway.fetch('/api/tasks', { headers: bearer(alice.token) })).json()) as TaskJson[]
    assert.deepEqual(alicesList.map((t) => t.id), [task.id])
    const bobsHome = await (await gateway.fetch('/', { headers: bearer(bob.token) })).text()
    assert.equal(bobsHome.includes(task.id.slice(0, 8)), false, "bob's home page does not list alice's task")

    // Uploads too: bob cannot see alice's upload preview or import it.
    const upload = await gateway.fetch('/datasets/notes/uploads', { method: 'POST', headers: { ...bearer(alice.token), 'Content-Type': 'text/csv' }, body: 'id,body\n501,x\n' })
    assert.equal(upload.status, 303)
    const uploadPath = upload.headers.get('Location')!
    assert.equal((await gateway.fetch(uploadPath, { headers: bearer(alice.token) })).status, 200)
    assert.equal((await gateway.fetch(uploadPath, { headers: bearer(bob.token) })).status, 404)
    const stolen = await gateway.fetch(`${uploadPath}/imports`, { method: 'POST', headers: bearer(bob.token), body: new URLSearchParams({ column: 'id' }) })
    assert.equal(stolen.status, 404)
  })
})

describe("a token's PostgreSQL role", () => {
  test('grants and row-level security decide what it lists, exports and imports', async () => {
    const clerk = await createToken({ name: 'clerk', role: 'user', dbRole: clerkRole })
    assert.equal(clerk.status, 201, JSON.stringify(clerk.json))

    const listed = (await (await gateway.fetch('/api/datasets', { headers: bearer(clerk.token) })).json()) as { name: string; canImport: boolean }[]
    assert.deepEqual(listed.map((d) => [d.name, d.canImport]), [['notes', true], ['regions', false]])

    const denied = await exportAs(clerk.token, 'salaries')
    assert.equal(denied.status, 404, 'a table the role cannot read does not exist for it')
    assert.equal((await gateway.fetch('/datasets/salaries', { headers: bearer(clerk.token) })).status, 404)

    const task = await finishedExport(clerk.token, 'regions', '?order=id')
    assert.equal(task.state, 'succeeded')
    const file = await (await gateway.fetch(new URL(task.download!).pathname, { headers: bearer(clerk.token) })).text()
    assert.equal(file, 'id,region,amount\n1,north,10\n3,north,30\n', 'row-level security applied inside the export')

    const importDenied = await gateway.fetch('/api/datasets/regions/imports', { method: 'POST', headers: { ...bearer(clerk.token), 'Content-Type': 'text/csv' }, body: 'id,region,amount\n9,west,1\n' })
    assert.equal(importDenied.status, 403)
    assert.match(((await importDenied.json()) as { error: string }).error, /not import into it/)

    const imported = await gateway.fetch('/api/datasets/notes/imports', { method: 'POST', headers: { ...bearer(clerk.token), 'Content-Type': 'text/csv' }, body: 'id,body\n1001,from the clerk\n' })
    assert.equal(imported.status, 202)
    const done = await waitForTask(gateway, ((await imported.json()) as TaskJson).id)
    assert.equal(done.state, 'succeeded', JSON.stringify(done))
    const [row] = await db.sql`select body from notes where id = 1001`
    assert.equal(row!.body, 'from the clerk')

    // Upsert needs UPDATE, which the role lacks: the task fails saying so, and nothing changed.
    const upsert = await gateway.fetch('/api/datasets/notes/imports?mode=upsert', { method: 'POST', headers: { ...bearer(clerk.token), 'Content-Type': 'text/csv' }, body: 'id,body\n1,changed\n' })
    const failed = await waitForTask(gateway, ((await upsert.json()) as TaskJson).id)
    assert.equal(failed.state, 'failed')
    assert.equal(failed.errorCode, 'PERMISSION_DENIED')
    assert.equal(failed.attempts, 1, 'a missing grant is not retried')
    assert.match(failed.error!, /permission denied/)
    const [note] = await db.sql`select body from notes where id = 1`
    assert.equal(note!.body, 'note 1')
  })
})

describe('signed download links', () => {
  test('work without a session until they expire, and die with a changed signature or a revoked token', async () => {
    const owner = await createToken({ name: 'sharer', role: 'user' })
    const task = (await finishedExport(owner.token, 'notes', '?order=id&limit=3')) as TaskJson & { signedDownload: { url: string; expiresAt: string } }
    assert.ok(task.signedDownload)
    const hours = (Date.parse(task.signedDownload.expiresAt) - Date.now()) / 3600_000
    assert.ok(hours > 23 && hours <= 25, `valid for about a day, got ${hours} h`)
    const url = new URL(task.signedDownload.url)
    const ok = await gateway.fetchAnonymously(url.pathname + url.search)
    assert.equal(ok.status, 200)
    assert.equal(await ok.text(), 'id,body\n1,note 1\n2,note 2\n3,note 3\n')

    const tampered = new URL(url)
    tampered.searchParams.set('expires', String(Number(url.searchParams.get('expires')) + 3600))
    assert.equal((await gateway.fetchAnonymously(tampered.pathname + tampered.search)).status, 403, 'a longer expiry breaks the signature')
    const otherTask = new URL(url)
    otherTask.pathname = '/files/00000000-0000-4000-8000-000000000000'
    assert.equal((await gateway.fetchAnonymously(otherTask.pathname + otherTask.search)).status, 403)
    assert.equal((await gateway.fetchAnonymously(`/files/${task.id}`)).status, 403, 'no signature')

    // A link signed with the real key but already past its time.
    const [key] = await db.sql`select value from sluice.secrets where name = 'download_link_key'`
    const [row] = await db.sql`select result_key from sluice.tasks where id = ${task.id}`
    const stale = createLinkSigner(Buffer.from(key!.value, 'base64url')).sign(task.id, row!.result_key, new Date(Date.now() - 1000))
    const expired = await gateway.fetchAnonymously(stale)
    assert.equal(expired.status, 410)
    assert.match(await expired.text(), /This download link has expired/)

    await gateway.fetch(`/api/tokens/${owner.id}`, { method: 'DELETE' })
    assert.equal((await gateway.fetchAnonymously(url.pathname + url.search)).status, 403, 'revoking the token revokes its links')
  })
})

describe('dead letters', () => {
  test('a failed task keeps its attempts and error, and can be run again from the API and from the page', async () => {
    await db.sql`update export_switch set allowed = false`
    const failed = await finishedExport(gateway.adminToken, 'guarded_rows')
    assert.equal(failed.state, 'failed')
    assert.equal(failed.attempts, 1)
    assert.match(failed.error!, /the export switch is off/)
    const page = await (await gateway.fetch(`/tasks/${failed.id}`)).text()
    assert.match(page, /the export switch is off/)
    assert.match(page, /id="retry-form"/, 'the page offers to run it again')

    await db.sql`update export_switch set allowed = true`
    const retried = await gateway.fetch(`/api/tasks/${failed.id}/retry`, { method: 'POST' })
    assert.equal(retried.status, 202)
    const done = (await waitForTask(gateway, failed.id)) as TaskJson & { details: { previousRun: { error: string; attempts: number } } }
    assert.equal(done.state, 'succeeded')
    assert.match(done.details.previousRun.error, /the export switch is off/, 'what ended the previous run is kept')
    assert.equal(done.details.previousRun.attempts, 1)
    assert.equal((await gateway.fetch(`/api/tasks/${failed.id}/retry`, { method: 'POST' })).status, 409, 'a succeeded task is not retried')

    // From the page, as a signed-in browser would.
    await db.sql`update export_switch set allowed = false`
    const again = await finishedExport(gateway.adminToken, 'guarded_rows')
    await db.sql`update export_switch set allowed = true`
    const { cookie, csrf } = await signInWithForm(gateway)
    const form = await gateway.fetchAnonymously(`/tasks/${again.id}/retry`, {
      method: 'POST', headers: { Cookie: cookie, 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ _csrf: csrf }),
    })
    assert.equal(form.status, 303)
    assert.equal((await waitForTask(gateway, again.id)).state, 'succeeded')
  })
})

describe('first start', () => {
  test('with no admin token anywhere, one is made and printed once as a sign-in link', async () => {
    const fresh = await createTestDatabase()
    const storageDir = await mkdtemp(path.join(os.tmpdir(), 'sluice-first-start-'))
    const start = async () => {
      const lines: string[] = []
      const { config, problems } = parseConfig({ PORT: '0', STORAGE_DIR: storageDir, DATABASE_URL: fresh.url })
      assert.deepEqual(problems, [])
      const started = await startGateway(config, (line) => lines.push(line))
      return { started, log: lines.join('\n') }
    }
    try {
      const first = await start()
      const link = /(http:\/\/\S+\/sign-in\?token=(sluice_\S+))/.exec(first.log)
      assert.ok(link, `the log shows a sign-in link: ${first.log}`)
      const [stored] = await fresh.sql`select count(*)::int as n, bool_and(role = 'admin') as admin from sluice.tokens`
      assert.deepEqual({ ...stored }, { n: 1, admin: true })

      // The link fills in the form; the click signs in.
      const form = await fetch(link[1]!, { redirect: 'manual' })
      const html = await form.text()
      assert.match(html, new RegExp(`name="token" value="${link[2]}"`))
      const formKey = /name="_csrf" value="([^"]+)"/.exec(html)![1]!
      const signedIn = await fetch(`${first.started.url}/sign-in`, {
        method: 'POST', redirect: 'manual',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: form.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ') },
        body: new URLSearchParams({ token: link[2]!, next: '/', _csrf: formKey }),
      })
      assert.equal(signedIn.status, 303)
      const cookie = signedIn.headers.getSetCookie().find((c) => c.startsWith('sluice_session='))!.split(';')[0]!
      const tokensPage = await fetch(`${first.started.url}/tokens`, { headers: { Cookie: cookie } })
      assert.equal(tokensPage.status, 200, 'the printed token is an admin')
      await first.started.stop(1_000)

      const second = await start()
      assert.doesNotMatch(second.log, /sign-in\?token=/, 'a live admin token exists: nothing new is printed')
      await second.started.stop(1_000)
      const [after] = await fresh.sql`select count(*)::int as n from sluice.tokens`
      assert.equal(after!.n, 1)
    } finally {
      await fresh.drop()
      await rm(storageDir, { recursive: true, force: true })
    }
  })

  test('GATEWAY_ADMIN_TOKEN is refused when short, and otherwise works as an admin token', async () => {
    assert.match(parseConfig({ GATEWAY_ADMIN_TOKEN: 'short' }).problems.join(), /at least 24 printable characters/)
    assert.match(parseConfig({ GATEWAY_ADMIN_TOKEN: 'has spaces in it but is long enough' }).problems.join(), /GATEWAY_ADMIN_TOKEN/)
    const res = await gateway.fetch('/api/tokens')
    assert.equal(res.status, 200, 'the test gateway runs with GATEWAY_ADMIN_TOKEN and it is an admin')
  })
})

/** Files (not folders) under the named folders of `root`; a folder not made yet holds none. */
async function filesUnder(root: string, ...folders: string[]): Promise<string[]> {
  const found: string[] = []
  for (const folder of folders) {
    const entries = await readdir(path.join(root, folder), { recursive: true, withFileTypes: true }).catch(() => [])
    found.push(...entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name)))
  }
  return found
}
