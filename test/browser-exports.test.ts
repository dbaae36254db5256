import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { after, before, test } from 'node:test'
import { parse } from 'csv-parse/sync'
import type { Browser } from 'playwright-core'
import { launchBrowser } from './support/browser.ts'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { startTestGateway, type TestGateway } from './support/gateway.ts'

let db: TestDatabase
let gateway: TestGateway
let browser: Browser

before(async () => {
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

test('dataset page → export form → progress page → the downloaded file, once', async () => {
  const page = await browser.newPage()
  const downloads: string[] = []
  page.on('download', (d) => downloads.push(d.suggestedFilename()))
  await page.goto(`${gateway.url}/`)
  await page.click('a[href="/datasets/slow_orders"]')
  await page.check('input[name=select][value=id]')
  await page.check('input[name=select][value=customer]')
  await page.check('input[name=select][value=note]')
  await page.selectOption('select[aria-label="filter 1 column"]', 'total')
  await page.selectOption('select[aria-label="filter 1 operator"]', 'gt')
  await page.fill('input[aria-label="filter 1 value"]', '100')
  await page.selectOption('select[name=order_column]', 'id')
  await page.selectOption('select[name=order_direction]', 'desc')
  await Promise.all([page.waitForURL(/\/tasks\/[0-9a-f-]{36}$/), page.click('#export-form button[type=submit]')])

  await page.locator('progress[aria-label=progress]').waitFor({ timeout: 10_000 })
  const download = await page.waitForEvent('download', { timeout: 30_000 })
  assert.match(download.suggestedFilename(), /^slow_orders-\d{4}-\d{2}-\d{2}\.csv$/)
  const rows = parseCsv(await readFile((await download.path())!, 'utf8'))
  assert.deepEqual(rows[0], ['id', 'customer', 'note'])
  assert.deepEqual(rows.slice(1), await direct('select id::text, customer, note from orders o where total > 100 order by o.id desc'))

  assert.equal(await page.locator('.state').innerText(), 'succeeded')
  assert.match(await page.locator('#download-link').innerText(), /slow_orders-.*\.csv/)
  await page.waitForTimeout(3000)
  assert.equal(downloads.length, 1, 'polling stopped: the file was downloaded once')
  await page.close()
})

test('without JavaScript the task page refreshes itself until it shows the link', async () => {
  const context = await browser.newContext({ javaScriptEnabled: false, acceptDownloads: true })
  const page = await context.newPage()
  await page.goto(`${gateway.url}/datasets/slow_orders`)
  await page.check('input[name=gzip]')
  await Promise.all([page.waitForURL(/\/tasks\//), page.click('#export-form button[type=submit]')])
  assert.notEqual(await page.locator('.state').innerText(), 'succeeded', 'the first view is still in progress')
  await page.locator('#download-link').waitFor({ timeout: 30_000 })
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-link')])
  assert.match(download.suggestedFilename(), /\.csv\.gz$/)
  await context.close()
})

test('a value that does not fit its column is shown on the form, not queued', async () => {
  const page = await browser.newPage()
  await page.goto(`${gateway.url}/datasets/orders`)
  await page.selectOption('select[aria-label="filter 1 column"]', 'id')
  await page.fill('input[aria-label="filter 1 value"]', 'abc')
  const [response] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'POST'), page.click('#export-form button[type=submit]')])
  assert.equal(response.status(), 400)
  assert.match(await page.locator('[role=alert]').innerText(), /invalid input syntax for type integer: "abc"/)
  await page.close()
})
