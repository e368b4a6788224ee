import { existsSync, realpathSync } from 'node:fs'
import { resolve } from 'node:path'
import { isPostgresUrl, openStore, type StoreOptions } from '../../db/open.js'
import { describeUrl } from '../../db/postgres/database.js'
import { COPY_ORDER } from '../../db/rows.js'
import type { Store } from '../../db/store.js'
import { cliOptions, missingDatabase, parseCommand } from './command.js'
import { CliError, plural, type Io } from './io.js'

const USAGE = 'tokenline copy --to <database>'

/** A database as messages name it: a SQLite path as given, a PostgreSQL server without its user or password. */
const describe = (database: string): string => (isPostgresUrl(database) ? describeUrl(database) : database)

/** The first line of an error's message: a failed command prints exactly one line. */
const firstLine = (err: unknown): string => (String((err as Error | undefined)?.message ?? err).split('\n')[0] ?? 'unknown error')

/** Whether two database settings name the same database (as far as can be told without opening them). */
function sameDatabase (a: string, b: string): boolean {
  if (isPostgresUrl(a) !== isPostgresUrl(b)) return false
  if (isPostgresUrl(a)) return describeUrl(a).toLowerCase() === describeUrl(b).toLowerCase()
  // Through symbolic links, too.
  const real = (file: string): string => (existsSync(file) ? realpathSync(file) : resolve(file))
  return real(a) === real(b)
}

async function open (database: string, opts: StoreOptions, role: string): Promise<Store> {
  try {
    return await openStore(database, opts)
  } catch (err) {
    // openStore's own PostgreSQL message already names the server (never the password).
    throw new CliError(isPostgresUrl(database) ? `${role}: ${firstLine(err)}` : `${role}: cannot open ${database}: ${firstLine(err)}`)
  }
}

/**
 * `tokenline copy --to <database>`: every row of the database TOKENLINE_DB names, copied into another
 * one, empty, of either engine (SQLite → PostgreSQL and back), exactly as it is: the same ids, times,
 * digests and marks, so every refresh token keeps working, and every token already consumed is still
 * caught as reuse. The source is read in one snapshot, a page at a time; servers may keep running on
 * it, but what they write after the copy started is not in the copy, so stop them first for a move.
 */
export async function copyCommand (args: string[], io: Io): Promise<void> {
  const { values: { to } } = parseCommand(args, { usage: USAGE, options: { to: { type: 'string' } } })
  if (to === undefined || to === '') throw new CliError(`usage: ${USAGE}`, 2)

  const opts = cliOptions(io)
  const from = opts.database
  // Opening a SQLite file that is not there would create an empty one, and copy nothing. The target
  // (--to) is opened without mustExist: creating it is the point.
  const missing = missingDatabase(from)
  if (missing !== undefined) throw missing
  if (sameDatabase(from, to)) throw new CliError(`--to names the database being copied (${describe(to)}): copy into another, empty database`)

  const storeOptions: StoreOptions = { pgPoolSize: opts.pgPoolSize, pgStatementTimeoutMs: opts.pgStatementTimeout * 1000 }
  const source = await open(from, storeOptions, 'source')
  try {
    const target = await open(to, storeOptions, 'target')
    try {
      const empty = await target.isEmpty().catch((err: unknown) => { throw new CliError(`target: ${firstLine(err)}`) })
      if (!empty) throw new CliError(`${describe(to)} is not empty: copy only into a new, empty database`)
      await copyAll(source, target, io, `${describe(from)} to ${describe(to)}`)
    } finally {
      await target.close()
    }
  } finally {
    await source.close()
  }
}

/** Copies batch by batch, printing each table's count once it is done. */
async function copyAll (source: Store, target: Store, io: Io, fromTo: string): Promise<void> {
  const counts = new Map(COPY_ORDER.map((kind) => [kind, 0]))
  const width = Math.max(...COPY_ORDER.map((kind) => kind.length))
  let printed = 0
  /** Prints the tables before `upTo` (in copy order) not printed yet: they are complete. */
  const printUpTo = (upTo: number): void => {
    for (; printed < upTo; printed++) {
      const kind = COPY_ORDER[printed] as typeof COPY_ORDER[number]
      io.stdout.write(`${kind.padEnd(width)}  ${plural(counts.get(kind) ?? 0, 'row')}\n`)
    }
  }
  let current: string = COPY_ORDER[0] as string
  try {
    for await (const batch of source.exportRows()) {
      current = batch.kind
      printUpTo(COPY_ORDER.indexOf(batch.kind))
      await target.importRows(batch)
      counts.set(batch.kind, (counts.get(batch.kind) ?? 0) + batch.rows.length)
    }
  } catch (err) {
    throw new CliError(`copy failed at ${current} (${firstLine(err)}); the target holds a partial copy: empty it before trying again`)
  }
  printUpTo(COPY_ORDER.length)
  const total = [...counts.values()].reduce((a, b) => a + b, 0)
  io.stdout.write(`copied ${plural(total, 'row')} from ${fromTo}\n`)
}
