import type { Store } from './store.js'
import { openDatabase } from './sqlite/database.js'
import { createStore } from './sqlite/store.js'
import { isPostgresUrl } from './postgres/database.js'
import { openPostgresStore } from './postgres/store.js'

export { isPostgresUrl }

export interface StoreOptions {
  /** PostgreSQL: connections kept at most. */
  pgPoolSize: number
  /** PostgreSQL: the longest a statement, or a wait for a connection, may take, ms. */
  pgStatementTimeoutMs: number
  /** SQLite: fail (SQLITE_CANTOPEN) rather than create a file that is not there. */
  mustExist?: boolean
}

/**
 * The store the database setting names: a `postgres://` or `postgresql://` URL is a PostgreSQL
 * database (db/postgres/), anything else a SQLite file (db/sqlite/), created on first use unless
 * `mustExist`. Either is
 * migrated to this version's schema before it is returned.
 */
export async function openStore (database: string, opts: StoreOptions): Promise<Store> {
  if (isPostgresUrl(database)) return await openPostgresStore(database, { poolSize: opts.pgPoolSize, statementTimeoutMs: opts.pgStatementTimeoutMs })
  return createStore(openDatabase(database, { mustExist: opts.mustExist ?? false }))
}
