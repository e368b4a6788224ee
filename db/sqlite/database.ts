import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadMigrations as load, type Migration } from '../migrations.js'

export type DB = Database.Database

const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), 'migrations')

/** How long a connection waits for another process's write lock, in ms. */
export const BUSY_TIMEOUT_MS = 5000

export const loadMigrations = (dir = MIGRATIONS_DIR): Migration[] => load(dir)

/**
 * Opens (creating if needed, unless `mustExist` or `readonly`) the database file, sets the pragmas
 * every connection needs and applies pending migrations. Safe to call from several processes at once:
 * migrations run inside one immediate transaction that re-reads `user_version` after taking the write lock.
 */
export function openDatabase (file: string, opts: { readonly?: boolean, mustExist?: boolean } = {}): DB {
  const mustExist = (opts.readonly ?? false) || (opts.mustExist ?? false)
  if (file !== ':memory:' && !mustExist) mkdirSync(dirname(file), { recursive: true })
  const db = new Database(file, { timeout: BUSY_TIMEOUT_MS, readonly: opts.readonly ?? false, fileMustExist: mustExist })
  if (!opts.readonly) db.pragma('journal_mode = WAL')
  // NORMAL in WAL mode survives application crashes (SIGKILL); only an OS crash can lose the last commits.
  db.pragma('synchronous = NORMAL')
  db.pragma('foreign_keys = ON')
  db.pragma('temp_store = MEMORY')
  // Bounds the -wal file after checkpoints (64 MiB).
  db.pragma('journal_size_limit = 67108864')
  if (!opts.readonly) migrate(db)
  return db
}

export function schemaVersion (db: DB): number {
  return db.pragma('user_version', { simple: true }) as number
}

export function migrate (db: DB, migrations = loadMigrations()): number {
  const latest = migrations.at(-1)?.version ?? 0
  if (schemaVersion(db) >= latest) return schemaVersion(db)
  db.transaction(() => {
    const current = schemaVersion(db)
    for (const m of migrations) {
      if (m.version <= current) continue
      db.exec(m.sql)
      db.pragma(`user_version = ${m.version}`)
    }
  }).immediate()
  return schemaVersion(db)
}

export function latestMigration (): number {
  return loadMigrations().at(-1)?.version ?? 0
}
