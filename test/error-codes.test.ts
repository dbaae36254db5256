import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { startTestGateway, waitForTask, type TaskJson, type TestGateway } from './support/gateway.ts'

// The contract: `errorCode` is always a name (README, "Error codes"), never a raw SQLSTATE;
// the SQLSTATE, when PostgreSQL raised the error, is `sqlState` beside it, in a task's JSON
// and in an HTTP error's.

type Task = TaskJson & { sqlState: string | null }

let db: TestDatabase
let gateway: TestGateway

before(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table guarded (id int primary key, amount int);
    create function refuse_negative() returns trigger language plpgsql as $$
    begin
      if new.amount < 0 then raise exception 'amount % is negative', new.amount using errcode = 'check_violation'; end if;
      return new;
    end $$;
    create trigger guarded_amount before insert on guarded for each row execute function refuse_negative();

    create view ratios as select g as n, 10 / (g - 3) as ratio from generate_series(1, 5) g;

    -- an error class the table does not name: config_file_error
    create function odd_failure(n int) returns int language plpgsql as $$
    begin
      if n = 2 then raise exception 'odd failure' using errcode = 'F0000'; end if;
      return n;
    end $$;
    create view odd as select odd_failure(g) as n from generate_series(1, 3) g;

    -- immutable, so the planner folds it during the request's EXPLAIN: the error reaches the HTTP answer
    create function fails_when_planned() returns int immutable language plpgsql as $$
    begin raise exception 'planned to fail' using errcode = 'F0000'; end $$;
    create view fails_at_plan as select fails_when_planned() as n from generate_series(1, 3) g;
  `)
  gateway = await startTestGateway(db.url)
})

after(async () => {
  await gateway?.stop()
  await db?.drop()
})

async function finishedTask(res: Response): Promise<Task> {
  const body = (await res.json()) as Task
  assert.equal(res.status, 202, JSON.stringify(body))
  return (await waitForTask(gateway, body.id)) as Task
}

test('an import a trigger refuses fails with a named code, and the SQLSTATE in its own field', async () => {
  const res = await gateway.fetch('/api/datasets/guarded/imports', {
    method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: 'id,amount\n1,5\n2,-3\n',
  })
  const task = await finishedTask(res)
  assert.equal(task.state, 'failed')
  assert.equal(task.errorCode, 'CHECK_FAILED', JSON.stringify(task))
  assert.equal(task.sqlState, '23514')
  assert.match(task.error!, /amount -3 is negative/)
})

test('an export failing on the database at run time reports a name and the SQLSTATE apart', async () => {
  const task = await finishedTask(await gateway.fetch('/api/datasets/ratios/exports', { method: 'POST' }))
  assert.equal(task.state, 'failed')
  assert.equal(task.errorCode, 'DIVISION_BY_ZERO')
  assert.equal(task.sqlState, '22012')
})

test('a SQLSTATE the table does not name is DATABASE_ERROR, never the raw code', async () => {
  const task = await finishedTask(await gateway.fetch('/api/datasets/odd/exports', { method: 'POST' }))
  assert.equal(task.state, 'failed')
  assert.equal(task.errorCode, 'DATABASE_ERROR')
  assert.equal(task.sqlState, 'F0000')
  const [row] = await db.sql`select error_code, sql_state from sluice.tasks where id = ${task.id}`
  assert.deepEqual({ ...row }, { error_code: 'DATABASE_ERROR', sql_state: 'F0000' })
})

test('an HTTP error from the database carries a named code and its SQLSTATE', async () => {
  const res = await gateway.fetch('/api/datasets/fails_at_plan/exports', { method: 'POST' })
  const body = (await res.json()) as { code: string; sqlState?: string; error: string }
  assert.equal(res.status, 500)
  assert.equal(body.code, 'DATABASE_ERROR')
  assert.equal(body.sqlState, 'F0000')
  assert.doesNotMatch(body.error, /planned to fail/, 'the database\'s own text stays in the log')
})

test('a task that succeeded has no sqlState', async () => {
  const task = await finishedTask(await gateway.fetch('/api/datasets/guarded/exports', { method: 'POST' }))
  assert.equal(task.state, 'succeeded')
  assert.equal(task.sqlState, null)
  assert.equal(task.errorCode, null)
})
