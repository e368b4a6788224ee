/*
 * A PostgreSQL server for the tests that need one, in this order:
 *
 * 1. TOKENLINE_TEST_PG_URL, when set: a server someone runs (its user may create databases);
 * 2. otherwise a throwaway cluster started here from PostgreSQL's server binaries (`initdb` in a
 *    temporary directory, on a free port, as the `postgres` OS user when running as root, since initdb
 *    refuses root), stopped and removed when the test ends;
 * 3. otherwise the test is skipped, with a message saying how to enable it.
 *
 * Every `database()` is a new, empty database on that server, so tests never see each other's rows.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import tap, { type Test } from 'tap'
import { freePort, run } from './processes.js'

/** Where Debian's postgresql-NN package puts the server binaries; the newest version wins. */
function binDir (): string | undefined {
  const root = '/usr/lib/postgresql'
  if (!existsSync(root)) return undefined
  const versions = readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a))
  for (const v of versions) if (existsSync(join(root, v, 'bin', 'initdb'))) return join(root, v, 'bin')
  return undefined
}

const HOW_TO = 'PostgreSQL tests skipped: set TOKENLINE_TEST_PG_URL=postgres://user:pass@host:port/db (a user that may CREATE DATABASE), ' +
  'or install the server binaries (apt-get install postgresql) so the tests can start a throwaway cluster'

export interface PgServer {
  /** A URL of the server's maintenance database, for a user that may create databases (TOKENLINE_TEST_PG_URL's form). */
  adminUrl: string
  /** A new, empty database on the server, dropped when `owner` (else the server's test) ends: its postgres:// URL. */
  database: (owner?: Test) => Promise<string>
  /**
   * Only for a cluster started here (undefined with TOKENLINE_TEST_PG_URL): stops it hard (`pg_ctl stop
   * -m immediate`, a crash as far as PostgreSQL can tell: no checkpoint, recovery at the next start).
   * Asynchronous, so a test's clients keep sending while it happens.
   */
  stop?: () => Promise<void>
  /** Starts the stopped cluster again on the same port and directory (after crash recovery). */
  start?: () => Promise<void>
}

/** A throwaway cluster: initdb, pg_ctl start; removed when `t` ends. */
async function startCluster (t: Test, bin: string): Promise<PgServer> {
  const root = process.getuid?.() === 0
  const dir = mkdtempSync(join(tmpdir(), 'tokenline-pg-'))
  const data = join(dir, 'data')
  const port = await freePort()
  // As root, initdb and the server run as the postgres OS user, which must own the directory.
  const asPg = (cmd: string, args: string[]): string[] => (root ? ['runuser', '-u', 'postgres', '--', join(bin, cmd), ...args] : [join(bin, cmd), ...args])
  const exec = (cmd: string, args: string[]): void => {
    const [file, ...rest] = asPg(cmd, args) as [string, ...string[]]
    const r = spawnSync(file, rest, { encoding: 'utf8', cwd: dir })
    if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr || r.stdout}`)
  }
  const execAsync = async (cmd: string, args: string[]): Promise<void> => {
    const [file, ...rest] = asPg(cmd, args) as [string, ...string[]]
    const r = await run(file, rest, { env: process.env, cwd: dir, input: '' })
    if (r.code !== 0) throw new Error(`${cmd} failed: ${r.stderr || r.stdout}`)
  }
  if (root) {
    chmodSync(dir, 0o700)
    chownSync(dir, Number(execFileSync('id', ['-u', 'postgres']).toString()), Number(execFileSync('id', ['-g', 'postgres']).toString()))
  }
  exec('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C'])
  // A test server: no fsync (the data is thrown away), sockets only in its own directory. Commits
  // stay synchronous: with fsync off that is one write() to the OS per commit, and it keeps every
  // acknowledged commit through stop() (a crash of PostgreSQL, not of the OS), as a real server would.
  const options = `-c port=${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${dir} -c fsync=off -c full_page_writes=off -c max_connections=200`
  const startArgs = ['-D', data, '-l', join(dir, 'log'), '-o', options, '-w', '-t', '60', 'start']
  const stopArgs = ['-D', data, '-m', 'immediate', '-w', 'stop']
  exec('pg_ctl', startArgs)
  t.teardown(() => {
    try { exec('pg_ctl', stopArgs) } catch { /* already stopped */ }
    rmSync(dir, { recursive: true, force: true })
  })
  const admin = `postgres://postgres@127.0.0.1:${port}/postgres`
  return {
    adminUrl: admin,
    database: async (owner) => await createDatabase(owner ?? t, admin),
    stop: async () => await execAsync('pg_ctl', stopArgs),
    start: async () => await execAsync('pg_ctl', startArgs)
  }
}

/** CREATE DATABASE with a random name; dropped when `t` ends. */
async function createDatabase (t: Test, adminUrl: string): Promise<string> {
  const name = `tokenline_test_${randomBytes(6).toString('hex')}`
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  try {
    await admin.query(`CREATE DATABASE ${name}`)
  } finally {
    await admin.end()
  }
  t.teardown(async () => {
    const c = new pg.Client({ connectionString: adminUrl })
    try {
      await c.connect()
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    } catch { /* the server is gone with its cluster */ } finally {
      await c.end().catch(() => {})
    }
  })
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  return url.toString()
}

/**
 * The PostgreSQL server for `t`, or undefined after planning `t` as skipped (with how to enable it):
 * call it before `t` asserts anything.
 * In CI (`CI` set) a missing PostgreSQL fails the test instead: there it must always run.
 */
export async function postgres (t: Test): Promise<PgServer | undefined> {
  const url = process.env.TOKENLINE_TEST_PG_URL
  if (url !== undefined && url !== '') return { adminUrl: url, database: async (owner) => await createDatabase(owner ?? t, url) }
  const bin = binDir()
  if (bin === undefined) {
    skipWithoutPostgres(t)
    return undefined
  }
  return await startCluster(t, bin)
}

let shared: Promise<PgServer | undefined> | undefined

/**
 * One server for the whole test process (started at first use, stopped when the process's tests end),
 * for tests that each want a database of their own; undefined when there is none (then the caller
 * skips, with `skipWithoutPostgres`).
 */
export async function sharedPostgres (): Promise<PgServer | undefined> {
  const root = tap as unknown as Test
  shared ??= (async () => {
    const url = process.env.TOKENLINE_TEST_PG_URL
    if (url !== undefined && url !== '') return { adminUrl: url, database: async (owner?: Test) => await createDatabase(owner ?? root, url) }
    const bin = binDir()
    return bin === undefined ? undefined : await startCluster(root, bin)
  })()
  return await shared
}

/** Plans `t` as skipped, saying how to enable PostgreSQL; in CI, fails it instead. */
export function skipWithoutPostgres (t: Test): void {
  if (process.env.CI !== undefined && process.env.CI !== '') t.fail(HOW_TO.replace('skipped', 'cannot run in CI'))
  else t.plan(0, HOW_TO)
}

/**
 * Runs API test files again on PostgreSQL: each as a child tap process with TOKENLINE_TEST_ENGINE=postgres,
 * so test/helpers.ts gives every harness a fresh database on one shared server instead of a SQLite file.
 */
export async function rerunOnPostgres (files: string[]): Promise<void> {
  const root = tap as unknown as Test
  const server = await sharedPostgres()
  if (server === undefined) return skipWithoutPostgres(root)
  // Mostly waiting on PostgreSQL and the children's own servers: two at a time.
  root.jobs = 2
  for (const name of files) {
    // The same node flags as this process (tap's TypeScript loader), so the child runs the .ts file as tap would.
    root.spawn(process.execPath, [...process.execArgv, `test/${name}.test.ts`], {
      env: { ...process.env, TOKENLINE_TEST_ENGINE: 'postgres', TOKENLINE_TEST_PG_URL: server.adminUrl }
    }, `${name}.test.ts on PostgreSQL`)
  }
}
