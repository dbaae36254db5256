import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { migrateDatabase } from '../../src/db/migrate.ts'

/**
 * A fresh database for one test file on the run's server (see test/run.ts),
 * migrated like production. `sql` is a superuser connection for arranging data
 * and checking results directly.
 */
export async function createTestDatabase() {
  const adminUrl = process.env.SLUICE_TEST_ADMIN_URL ?? process.env.DATABASE_URL
  if (!adminUrl) throw new Error('run the tests with `npm test` (it starts PostgreSQL), or set DATABASE_URL')
  const name = `sluice_test_${randomBytes(5).toString('hex')}`
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
  await admin`create database ${admin(name)}`
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  await migrateDatabase(url.href)
  const sql = postgres(url.href, { max: 4, onnotice: () => {} })
  return {
    url: url.href,
    sql,
    async drop() {
      await sql.end({ timeout: 1 })
      await admin`drop database if exists ${admin(name)} with (force)`
      await admin.end({ timeout: 1 })
    },
  }
}

export type TestDatabase = Awaited<ReturnType<typeof createTestDatabase>>
