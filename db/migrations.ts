import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

/** One numbered schema change, `NNN-name.sql` in an engine's migrations directory. */
export interface Migration {
  version: number
  name: string
  sql: string
}

/** An engine's migrations, in version order. */
export function loadMigrations (dir: string): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d{3}-[\w-]+\.sql$/.test(f))
    .sort()
    .map((f) => ({ version: Number(f.slice(0, 3)), name: f, sql: readFileSync(join(dir, f), 'utf8') }))
}
