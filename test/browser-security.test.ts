import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import type { Browser, Page } from 'playwright-core'
import { launchBrowser, signIn } from './support/browser.ts'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { startTestGateway, waitForTask, type TaskJson, type TestGateway } from './support/gateway.ts'
import { skipUnlessBrowser } from './support/requirements.ts'

// Markup in names, cells and messages must reach the page as text. Each payload sets a
// flag or opens a dialog if it ever runs; the raw HTML must hold it escaped.

const TABLE = '<img src=x onerror=alert(1)>'
const COLUMN = '"><script>window.__xss="column"</script>'
const CELL = '<svg onload=alert("cell")>'
const BAD_DATE = '<script>alert("date")</script>'
const TOKEN_NAME = '<b onmouseover=alert("token")>bold</b>'

let db: TestDatabase
let gateway: TestGateway
let browser: Browser
let scratch: string

const skip = skipUnlessBrowser()

before(async () => {
  if (skip) return // no browser: every test below is skipped
  db = await createTestDatabase()
  await db.sql.unsafe(`create table ${quote(TABLE)} (id int primary key, ${quote(COLUMN)} text, joined date)`)
  await db.sql`insert into ${db.sql(TABLE)} values (1, ${CELL}, '2024-01-01')`
  gateway = await startTestGateway(db.url)
  browser = await launchBrowser()
  scratch = await mkdtemp(path.join(os.tmpdir(), 'sluice-xss-'))
})

after(async () => {
  await browser?.close()
  await gateway?.stop()
  await db?.drop()
  if (scratch) await rm(scratch, { recursive: true, force: true })
})

const quote = (name: string) => `"${name.replaceAll('"', '""')}"`

/** Records CSP violations and dialogs from the first script on; both must stay empty. */
async function watchedPage(): Promise<{ page: Page; dialogs: string[]; violations: () => Promise<string[]> }> {
  const page = await browser.newPage()
  const dialogs: string[] = []
  page.on('dialog', (d) => {
    dialogs.push(d.message())
    void d.dismiss()
  })
  // Strings rather than functions: the tests are type-checked without the DOM's types.
  await page.addInitScript({
    content: `window.__violations = []; document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI))`,
  })
  await signIn(page, gateway.url, gateway.adminToken)
  return { page, dialogs, violations: () => page.evaluate('window.__violations') as Promise<string[]> }
}

async function assertEscaped(pathname: string, payloads: string[]) {
  const html = await (await gateway.fetch(pathname)).text()
  for (const payload of payloads) {
    assert.equal(html.includes(payload), false, `${pathname} holds ${payload} unescaped`)
  }
  assert.equal(/<script>(?!<\/script>)/.test(html.replace(/<script src="[^"]+" defer><\/script>/g, '')), false, `${pathname} has an inline script`)
}

test('hostile dataset, column, cell, error and token names are shown as text on every page', { skip }, async () => {
  const { page, dialogs, violations } = await watchedPage()
  const tablePath = `/datasets/${encodeURIComponent(TABLE)}`

  await page.goto(`${gateway.url}/`)
  assert.equal(await page.locator(`a[href="${tablePath}"]`).innerText(), TABLE, 'the dataset name reads as typed')
  await page.goto(`${gateway.url}${tablePath}`)
  assert.equal(await page.locator('h1').innerText(), TABLE)
  assert.match(await page.locator('table').last().innerText(), /"><script>window.__xss="column"<\/script>/)

  // An upload whose header, cells and a bad value carry markup: the preview and the result show them.
  const file = path.join(scratch, 'hostile.csv')
  await writeFile(file, `id,${quote(COLUMN)},joined\n2,${quote(CELL)},2024-01-02\n3,x,${quote(BAD_DATE)}\n`)
  await page.setInputFiles('#upload-form input[type=file]', file)
  await Promise.all([page.waitForURL(/\/uploads\/[0-9a-f-]{36}$/), page.click('#upload-form button[type=submit]')])
  const uploadPath = new URL(page.url()).pathname
  assert.match(await page.locator('#import-form tbody').innerText(), /<svg onload=alert\("cell"\)>/)
  await page.selectOption('select[name=onError]', 'skip')
  await Promise.all([page.waitForURL(/\/tasks\/[0-9a-f-]{36}$/), page.click('#import-form button[type=submit]')])
  await page.locator('#import-result').waitFor({ timeout: 20_000 })
  assert.match(await page.locator('#import-result').innerText(), /<script>alert\("date"\)<\/script>" is not a date/)
  const taskPath = new URL(page.url()).pathname

  // A failed export whose message quotes the hostile filter value.
  const bad = await gateway.fetch(`${tablePath}/exports`, {
    method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ filter_column: 'id', filter_op: 'eq', filter_value: '<img src=y onerror=alert("filter")>' }),
  })
  assert.equal(bad.status, 400)
  assert.equal((await bad.text()).includes('<img src=y'), false, 'the refused value is escaped in the form error')

  const created = await gateway.fetch('/api/tokens', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: TOKEN_NAME }) })
  assert.equal(created.status, 201)
  await page.goto(`${gateway.url}/tokens`)
  assert.match(await page.locator('table').innerText(), /<b onmouseover=alert\("token"\)>bold<\/b>/)

  await page.goto(`${gateway.url}/datasets/${encodeURIComponent('<i>missing</i>')}`)
  assert.match(await page.locator('.error').innerText(), /no dataset named "<i>missing<\/i>"/)

  assert.deepEqual(dialogs, [], 'no payload opened a dialog')
  assert.equal(await page.evaluate('window.__xss'), undefined)
  assert.deepEqual(await violations(), [], 'our own pages need nothing the CSP forbids (htmx included)')

  for (const pathname of ['/', tablePath, uploadPath, taskPath, '/tokens']) {
    await assertEscaped(pathname, [TABLE, COLUMN, CELL, BAD_DATE, TOKEN_NAME])
  }
  const api = (await (await gateway.fetch(taskPath.replace('/tasks/', '/api/tasks/'))).json()) as TaskJson
  assert.equal((await waitForTask(gateway, api.id)).state, 'succeeded')
  await page.close()
})

test('the CSP blocks an inline script even if one got into a page', { skip }, async () => {
  // The second line of defence, checked directly: a page of ours with a script the server did not send.
  const { page, dialogs, violations } = await watchedPage()
  await page.goto(`${gateway.url}/`)
  await page.evaluate(`{ const s = document.createElement('script'); s.textContent = 'window.__xss = "injected"'; document.body.append(s) }`)
  assert.equal(await page.evaluate('window.__xss'), undefined)
  assert.ok((await violations()).some((v) => v.startsWith('script-src')), 'the browser reports the blocked script')
  assert.deepEqual(dialogs, [])
  await page.close()
})
