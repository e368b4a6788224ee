import { closeSync, existsSync, fchmodSync, openSync, renameSync, rmSync, statSync } from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'
import { openDatabase } from '../../db/sqlite/database.js'
import { isPostgresUrl } from '../../db/open.js'
import { cliOptions, parseCommand } from './command.js'
import { CliError, type Io } from './io.js'

const USAGE = 'tokenline backup <file> [--force]'

/** All remaining pages in one step: see below. */
const ALL_PAGES = 0x7fffffff

/**
 * `tokenline backup <file>`: a consistent copy of the live database through SQLite's online backup
 * API, while servers keep running (copying the main file with `cp` misses the commits still in the
 * -wal file). The copy is written beside the target and renamed into place, so a failed or interrupted
 * backup never leaves a half-written file under the target name.
 *
 * Not withStore: opening the store migrates the database, and a backup must only read it.
 */
export async function backupCommand (args: string[], io: Io): Promise<void> {
  const { values, positionals: { file: target } } = parseCommand(args, { usage: USAGE, positionals: ['file'], options: { force: { type: 'boolean', default: false } } })
  if (target === '') throw new CliError(`usage: ${USAGE}`, 2)

  const opts = cliOptions(io)
  if (isPostgresUrl(opts.database)) {
    throw new CliError('tokenline backup copies a SQLite file; for PostgreSQL use its own tool, e.g. pg_dump --format=custom --file=tokenline.dump "$TOKENLINE_DB" (restore with pg_restore)')
  }
  const source = resolve(opts.database)
  const dest = resolve(target)
  if (!existsSync(source)) throw new CliError(`database ${opts.database} does not exist (set TOKENLINE_DB)`)
  if (dest === source) throw new CliError('the backup file must not be the database itself')
  if (!existsSync(dirname(dest))) throw new CliError(`directory ${dirname(target)} does not exist`)
  if (existsSync(dest) && !values.force) throw new CliError(`${target} already exists (use --force to overwrite it)`)
  // A -wal beside the target belongs to the database being replaced; SQLite would replay it into the
  // new file on open and corrupt it.
  if (existsSync(`${dest}-wal`)) throw new CliError(`${target}-wal exists: ${target} is open or was not closed cleanly; move it away first`)

  // Read-only: a backup never migrates or otherwise writes to the live database.
  const db = openDatabase(source, { readonly: true })
  const tmp = join(dirname(dest), `.${basename(dest)}.${process.pid}.tmp`)
  try {
    // The copy holds the private signing keys: its file is made 0600 before a byte goes in (the umask
    // could leave it wider, so fchmod too), and SQLite writes into it, and makes its journal, with that
    // mode. A 0-byte file is an empty database to SQLite. The rename keeps the mode.
    rmSync(tmp, { force: true })
    const fd = openSync(tmp, 'wx', 0o600)
    try { fchmodSync(fd, 0o600) } finally { closeSync(fd) }
    // Copying every page in one step keeps the whole copy inside one read transaction: a write by a
    // server process in between steps would otherwise restart the backup, forever under steady load.
    await db.backup(tmp, { progress: () => ALL_PAGES })
    renameSync(tmp, dest)
  } catch (err) {
    rmSync(tmp, { force: true })
    throw err
  } finally {
    db.close()
  }
  io.stdout.write(`backup of ${opts.database} written to ${target} (${statSync(dest).size} bytes)\n`)
}
