import pg from 'pg'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadMigrations, type Migration } from '../migrations.js'
import { StoreError } from '../store.js'

/*
 * The PostgreSQL connection pool and schema migrations. node-postgres (`pg`) drives the server; each
 * instance keeps a pool of at most `poolSize` connections, and every query (and every wait for a free
 * connection) is bounded by `statementTimeoutMs`, so a lost database answers 503 instead of hanging.
 */

const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), 'migrations')

/** Any number of instances starting together: the one holding this advisory lock migrates, the others wait for it. */
const MIGRATION_LOCK = 0x746f6b6e // 'tokn'

export const postgresMigrations = (): Migration[] => loadMigrations(MIGRATIONS_DIR)
export const latestPostgresMigration = (): number => postgresMigrations().at(-1)?.version ?? 0

/** Whether the database setting names a PostgreSQL server rather than a SQLite file. */
export const isPostgresUrl = (database: string): boolean => /^postgres(ql)?:\/\//i.test(database)

/** The server's address for messages, without the user or password the URL may carry. */
export function describeUrl (url: string): string {
  try {
    const u = new URL(url)
    return `${u.hostname || 'localhost'}:${u.port || '5432'}${u.pathname}`
  } catch {
    return 'the PostgreSQL server'
  }
}

// Times are BIGINT milliseconds: well inside 2^53, so they are read as numbers, not strings. Given
// to each pool rather than set globally, so a host application's own `pg` use is unchanged.
const INT8 = 20
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser
}

export interface PoolOptions {
  poolSize: number
  statementTimeoutMs: number
}

export function createPool (url: string, opts: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.poolSize,
    types,
    application_name: 'tokenline',
    statement_timeout: opts.statementTimeoutMs,
    // Client side too: a connection whose server vanished without closing it must not hang a request.
    query_timeout: opts.statementTimeoutMs + 1000,
    connectionTimeoutMillis: opts.statementTimeoutMs,
    idleTimeoutMillis: 30_000,
    keepAlive: true
  })
  // An idle connection the server dropped (a restart, a failover): the pool discards it and opens a new
  // one on demand. Without a listener the error would end the process.
  pool.on('error', () => {})
  return pool
}

/**
 * Checks a client out of `pool` for several queries (a transaction). While a client is checked out,
 * pg-pool does not listen for its errors, and pg's Client emits 'error' when its connection is lost
 * (the server shut down or crashed), during a query or between two: with no listener that event
 * would end the process. The query in flight, or the next one, fails on its own; the listener only
 * notes the loss. `release()` returns the client to the pool, or discards it if its connection was
 * lost or `discard` says so (a transaction that failed midway).
 */
export async function checkout (pool: pg.Pool): Promise<{ client: pg.PoolClient, release: (discard?: boolean) => void }> {
  const client = await pool.connect()
  let lost = false
  const onError = (): void => { lost = true }
  client.on('error', onError)
  return {
    client,
    release: (discard = false) => {
      client.removeListener('error', onError)
      client.release(discard || lost)
    }
  }
}

/*
 * SQLSTATE classes that mean "not now" rather than "wrong": connection exceptions (08), insufficient
 * resources (53), operator intervention such as a shutdown or a statement timeout (57), system errors
 * (58), and transaction rollbacks such as serialization failures and deadlocks (40), which callers retry.
 */
const TRANSIENT_CLASSES = new Set(['08', '40', '53', '57', '58'])

/** Whether `err` says the database is unreachable or too slow, rather than that a query is wrong. */
export function isTransient (err: unknown): boolean {
  if (err instanceof StoreError) return err.code === 'unavailable'
  const code = (err as { code?: unknown } | null)?.code
  // A SQLSTATE is five characters; anything else from the driver is a network or timeout error.
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return TRANSIENT_CLASSES.has(code.slice(0, 2))
  if (typeof code === 'string') return true // ECONNREFUSED, ECONNRESET, ETIMEDOUT, EPIPE, ENOTFOUND…
  const message = (err as { message?: unknown } | null)?.message
  return typeof message === 'string' && /connection|timeout|terminat|not queryable/i.test(message)
}

/** Deadlock or serialization failure: the transaction was rolled back whole and may simply run again. */
export const isRetryable = (err: unknown): boolean => {
  const code = (err as { code?: unknown } | null)?.code
  return code === '40001' || code === '40P01'
}

/**
 * Applies pending migrations in one transaction under an advisory lock: instances starting together
 * migrate once, the others wait and then find nothing to do. Returns the schema version.
 */
export async function migrate (pool: pg.Pool, migrations = postgresMigrations()): Promise<number> {
  const { client, release } = await checkout(pool)
  try {
    await client.query('BEGIN')
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK])
    await client.query(`CREATE TABLE IF NOT EXISTS tokenline_migrations (
      version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`)
    const { rows } = await client.query<{ v: number | null }>('SELECT max(version) AS v FROM tokenline_migrations')
    let current = rows[0]?.v ?? 0
    for (const m of migrations) {
      if (m.version <= current) continue
      await client.query(m.sql)
      await client.query('INSERT INTO tokenline_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, Date.now()])
      current = m.version
    }
    await client.query('COMMIT')
    return current
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {})
    throw err
  } finally {
    release()
  }
}

/** The applied schema version (0 before the first migration). */
export async function schemaVersion (pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ v: number | null }>(
    "SELECT CASE WHEN to_regclass('tokenline_migrations') IS NULL THEN 0 ELSE (SELECT max(version) FROM tokenline_migrations) END AS v")
  return rows[0]?.v ?? 0
}
