import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { gunzipSync } from 'node:zlib'
import { parse } from 'csv-parse/sync'
import type { Browser, Page } from 'playwright-core'
import { launchBrowser, signIn } from './support/browser.ts'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { startTestGateway, type TestGateway } from './support/gateway.ts'
import { skipUnlessBrowser } from './support/requirements.ts'

let db: TestDatabase
let gateway: TestGateway
let browser: Browser

const skip = skipUnlessBrowser()

before(async () => {
  if (skip) return // no browser: every test below is skipped
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table orders (id int primary key, customer text, note text, total numeric(8, 2));
    insert into orders
    select g, case g % 3 when 0 then 'Zoë "Z" Müller' when 1 then 'comma, inc' else 'plain' end,
           case g % 4 when 0 then null when 1 then '' when 2 then E'two\\nlines' else '東京 ✓' end, g * 1.25
    from generate_series(1, 3000) g;
    -- slow enough for the progress page to be seen polling
    create view slow_orders as select o.*, pg_sleep(0.001)::text as waited from orders o;
  `)
  gateway = await startTestGateway(db.url)
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  await gateway?.stop()
  await db?.drop()
})

type Cell = string | null
const parseCsv = (text: string) => parse(text, { cast: (value, context) => (value === '' && !context.quoting ? null : value) }) as Cell[][]
const direct = async (query: string) => (await db.sql.unsafe(query).values()).map((r) => r.map((v) => (v === null ? null : String(v))))
const countTasks = async () => (await db.sql`select count(*)::int as n from sluice.tasks`)[0]!.n as number

/** SLUICE_TEST_SCREENSHOTS=/tmp keeps a picture of each page (sluice-*.png), to look at after changing views/. */
async function snapshot(page: Page, name: string) {
  const dir = process.env.SLUICE_TEST_SCREENSHOTS
  if (dir) await page.screenshot({ path: path.join(dir, `sluice-${name}.png`), fullPage: true })
}

test('dataset page → export form → progress page → the downloaded file, once', { skip }, async () => {
  const page = await browser.newPage()
  await signIn(page, gateway.url, gateway.adminToken)
  const downloads: string[] = []
  const polls: string[] = []
  page.on('download', (d) => downloads.push(d.suggestedFilename()))
  page.on('request', (r) => r.url().includes('/status') && polls.push(r.url()))
  await page.goto(`${gateway.url}/`)
  await page.click('a[href="/datasets/slow_orders"]')
  assert.equal(await page.locator('h1').innerText(), 'slow_orders')
  await page.check('input[name=select][value=id]')
  await page.check('input[name=select][value=customer]')
  await page.check('input[name=select][value=note]')
  await page.selectOption('select[aria-label="filter 1 column"]', 'total')
  await page.selectOption('select[aria-label="filter 1 operator"]', 'gt')
  await page.fill('input[aria-label="filter 1 value"]', '100')
  await page.selectOption('select[name=order_column]', 'id')
  await page.selectOption('select[name=order_direction]', 'desc')
  await snapshot(page, 'dataset')
  // Listening before the submit: a quick export must not slip past the test.
  const firstDownload = page.waitForEvent('download', { timeout: 30_000 })
  await Promise.all([page.waitForURL(/\/tasks\/[0-9a-f-]{36}$/), page.click('#export-form button[type=submit]')])
  const taskId = new URL(page.url()).pathname.split('/').at(-1)!

  await page.locator('progress[aria-label=progress]').waitFor({ timeout: 10_000 })
  const download = await firstDownload
  assert.match(download.suggestedFilename(), /^slow_orders-\d{4}-\d{2}-\d{2}\.csv$/)
  const rows = parseCsv(await readFile((await download.path())!, 'utf8'))
  assert.deepEqual(rows[0], ['id', 'customer', 'note'])
  assert.deepEqual(rows.slice(1), await direct('select id::text, customer, note from orders o where total > 100 order by o.id desc'))

  assert.equal(await page.locator('.state').innerText(), 'succeeded')
  assert.match(await page.locator('#download-link').innerText(), /^slow_orders-.*\.csv$/)
  assert.equal(await page.locator('#download-link').getAttribute('href'), `/api/tasks/${taskId}/download`)
  await snapshot(page, 'task-succeeded')
  const pollsAtSuccess = polls.length
  await page.waitForTimeout(3000)
  assert.equal(downloads.length, 1, 'the file was downloaded once')
  assert.equal(polls.length, pollsAtSuccess, `polling stopped once the task finished; later polls: ${polls.slice(pollsAtSuccess).join(', ')}`)
  await page.close()
})

test('without JavaScript the task page refreshes itself until it shows the link', { skip }, async () => {
  const context = await browser.newContext({ javaScriptEnabled: false, acceptDownloads: true })
  const page = await context.newPage()
  await signIn(page, gateway.url, gateway.adminToken)
  await page.goto(`${gateway.url}/datasets/slow_orders`)
  // No column ticked: all of them. The value travels as a plain form post, non-ASCII and all.
  await page.selectOption('select[aria-label="filter 1 column"]', 'customer')
  await page.selectOption('select[aria-label="filter 1 operator"]', 'ilike')
  await page.fill('input[aria-label="filter 1 value"]', 'zoë*')
  await page.selectOption('select[name=order_column]', 'id')
  await page.selectOption('select[name=order_direction]', 'desc')
  await page.check('input[name=gzip]')
  await Promise.all([page.waitForURL(/\/tasks\//), page.click('#export-form button[type=submit]')])
  assert.notEqual(await page.locator('.state').innerText(), 'succeeded', 'the first view is still in progress')
  assert.equal(await page.locator('noscript meta[http-equiv=refresh]').getAttribute('content'), '2')
  let reloads = 0
  page.on('load', () => reloads++)

  await page.locator('#download-link').waitFor({ timeout: 30_000 })
  assert.ok(reloads >= 1, 'the page reloaded itself')
  assert.equal(await page.locator('meta[http-equiv=refresh]').count(), 0, 'a finished task stops refreshing')
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-link')])
  assert.match(download.suggestedFilename(), /^slow_orders-.*\.csv\.gz$/)
  const rows = parseCsv(gunzipSync(await readFile((await download.path())!)).toString('utf8'))
  assert.deepEqual(rows[0], ['id', 'customer', 'note', 'total', 'waited'])
  const expected = await direct(`select id::text, customer, note, total::text, '' from orders o where customer ilike 'zoë%' order by o.id desc`)
  assert.equal(expected.length, 1000)
  assert.deepEqual(rows.slice(1), expected)
  await context.close()
})

test('a value that does not fit its column is shown on the form, not queued', { skip }, async () => {
  const tasksBefore = await countTasks()
  const page = await browser.newPage()
  await signIn(page, gateway.url, gateway.adminToken)
  await page.goto(`${gateway.url}/datasets/orders`)
  await page.selectOption('select[aria-label="filter 1 column"]', 'id')
  await page.fill('input[aria-label="filter 1 value"]', 'abc')
  const [response] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'POST'), page.click('#export-form button[type=submit]')])
  assert.equal(response.status(), 400)
  assert.equal(await page.locator('h1').innerText(), 'orders', 'the dataset page again, with its form')
  assert.ok(await page.locator('#export-form').isVisible())
  const alert = page.locator('[role=alert]')
  assert.ok(await alert.isVisible())
  assert.match(await alert.innerText(), /^The filters do not fit the columns: invalid input syntax for type integer: "abc"$/)
  await snapshot(page, 'dataset-error')
  assert.equal(await countTasks(), tasksBefore, 'nothing was queued')
  await page.close()
})
