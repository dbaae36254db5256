import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import type { Browser } from 'playwright-core'
import { launchBrowser, signIn } from './support/browser.ts'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { startTestGateway, type TestGateway } from './support/gateway.ts'
import { skipUnlessBrowser } from './support/requirements.ts'

let db: TestDatabase
let gateway: TestGateway
let browser: Browser
let scratch: string

const skip = skipUnlessBrowser()

before(async () => {
  if (skip) return // no browser: every test below is skipped
  db = await createTestDatabase()
  await db.sql.unsafe(`create table customers (id int primary key, full_name text not null, joined date, vip boolean default false)`)
  gateway = await startTestGateway(db.url)
  browser = await launchBrowser()
  scratch = await mkdtemp(path.join(os.tmpdir(), 'sluice-browser-'))
})

after(async () => {
  await browser?.close()
  await gateway?.stop()
  await db?.drop()
  if (scratch) await rm(scratch, { recursive: true, force: true })
})

test('upload through the form, map a column in the preview, end on the result with its error report', { skip }, async () => {
  const file = path.join(scratch, 'customers.csv')
  // Semicolons and Windows line ends, as Excel saves them; "Name" must be mapped by hand;
  // "notes" is skipped; line 4 has a bad date.
  await writeFile(file, 'ID;Name;Joined;notes\r\n1;Ada Lovelace;2024-01-05;x\r\n2;"Grace ""Amazing"" Hopper";2024-02-06;y\r\n3;Linus;31/02/2024;z\r\n')
  const page = await browser.newPage()
  await signIn(page, gateway.url, gateway.adminToken)
  await page.goto(`${gateway.url}/`)
  await page.click('a[href="/datasets/customers"]')
  await page.setInputFiles('#upload-form input[type=file]', file)
  await Promise.all([page.waitForURL(/\/uploads\/[0-9a-f-]{36}$/), page.click('#upload-form button[type=submit]')])

  // The preview shows what was detected and the first rows as parsed.
  assert.equal(await page.locator('select[name=delimiter]').inputValue(), ';')
  assert.equal(await page.locator('select[name=header]').inputValue(), 'true')
  assert.match(await page.locator('#import-form tbody').innerText(), /Grace "Amazing" Hopper/)
  const targets = page.locator('select[name=column]')
  assert.equal(await targets.count(), 4)
  assert.equal(await targets.nth(0).inputValue(), 'id', 'ID is matched to id ignoring case')
  assert.equal(await targets.nth(1).inputValue(), '', '"Name" matches no column: skipped until mapped')
  await targets.nth(1).selectOption('full_name')
  assert.equal(await targets.nth(3).inputValue(), '', 'notes stays skipped')
  await page.selectOption('select[name=onError]', 'skip')
  await Promise.all([page.waitForURL(/\/tasks\/[0-9a-f-]{36}$/), page.click('#import-form button[type=submit]')])

  await page.locator('#import-result').waitFor({ timeout: 20_000 })
  const result = await page.locator('#import-result').innerText()
  assert.match(result, /3 rows read · 2 inserted · 0 updated · 1 with errors/)
  assert.match(result, /Read as utf-8, semicolon-separated, with a header row/)
  assert.match(result, /4\s+column "joined": "31\/02\/2024" is not a date/)
  const rows = await db.sql`select id, full_name, joined::text from customers order by id`
  assert.deepEqual(rows.map((r) => ({ ...r })), [
    { id: 1, full_name: 'Ada Lovelace', joined: '2024-01-05' },
    { id: 2, full_name: 'Grace "Amazing" Hopper', joined: '2024-02-06' },
  ])

  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#report-link')])
  const report = await readFile((await download.path())!, 'utf8')
  assert.equal(report, 'ID,Name,Joined,notes,line,error\n3,Linus,31/02/2024,z,4,"column ""joined"": ""31/02/2024"" is not a date (write YYYY-MM-DD)"\n')
  await page.close()
})

test('without JavaScript the upload form still works and a mapping error is shown on the preview', { skip }, async () => {
  const context = await browser.newContext({ javaScriptEnabled: false })
  const page = await context.newPage()
  await signIn(page, gateway.url, gateway.adminToken)
  const file = path.join(scratch, 'dup.csv')
  await writeFile(file, 'id,full_name\n10,Ten\n')
  await page.goto(`${gateway.url}/datasets/customers`)
  await page.setInputFiles('#upload-form input[type=file]', file)
  await Promise.all([page.waitForURL(/\/uploads\//), page.click('#upload-form button[type=submit]')])
  const targets = page.locator('select[name=column]')
  await targets.nth(1).selectOption('id') // both CSV columns onto id
  await page.click('#import-form button[type=submit]')
  assert.match(await page.locator('.error').innerText(), /"id" is the target of two CSV columns/)
  await context.close()
})
