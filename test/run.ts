// `npm test`: runs every test file against a real PostgreSQL. With DATABASE_URL
// set, that server is used (each test file makes and drops its own database);
// without it, one embedded server is started for the whole run and stopped after.
import { spawn } from 'node:child_process'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../src/db/embedded.ts'

const testDir = path.dirname(fileURLToPath(import.meta.url))
// Arguments starting with -- go to node's test runner (e.g. --test-name-pattern=upsert).
const flags = process.argv.slice(2).filter((a) => a.startsWith('--'))
const requested = process.argv.slice(2).filter((a) => !a.startsWith('--'))
const files = requested.length > 0 ? requested : (await readdir(testDir)).filter((f) => /\.test\.tsx?$/.test(f)).sort().map((f) => path.join(testDir, f))

let embedded: EmbeddedPostgres | null = null
let scratch: string | null = null
let databaseUrl = process.env.DATABASE_URL
if (!databaseUrl) {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'sluice-test-pg-'))
  embedded = await startEmbeddedPostgres(path.join(scratch, 'postgres'))
  databaseUrl = embedded.adminUrl // tests make a database (and roles) of their own: that takes the superuser
  console.log(`# embedded PostgreSQL for this run: ${new URL(databaseUrl).host}`)
}

const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', ...flags, ...files], {
  stdio: 'inherit',
  env: { ...process.env, DATABASE_URL: databaseUrl, SLUICE_TEST_ADMIN_URL: databaseUrl },
})
const code: number = await new Promise((resolve) => child.on('close', (c) => resolve(c ?? 1)))
await embedded?.stop()
if (scratch) await rm(scratch, { recursive: true, force: true })
process.exit(code)
