import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { isPostgresUrl, openStore } from '../../db/open.js'
import type { Store } from '../../db/store.js'
import { fromEnv, resolveOptions, type ResolvedOptions } from '../options.js'
import { CliError, type Io } from './io.js'

/*
 * Every command is written the same way: parseCommand, then withStore, then print. A command's
 * mistakes are usage errors (exit status 2) in one of four shapes, so the same mistake reads the
 * same in every command:
 *
 *   usage: <usage>                                  nothing where something is required, or anything
 *                                                   given to a command that takes nothing at all
 *   <what parseArgs says> (usage: <usage>)          an unknown option, an option without its value,
 *                                                   a positional argument where none is taken
 *   missing <name> (usage: <usage>)                 a positional argument left out
 *   unexpected argument "<arg>" (usage: <usage>)    one positional argument more than it takes
 */

type Options = NonNullable<ParseArgsConfig['options']>

/** The option values parseArgs returns for `options` when strict: each typed by its declaration. */
type Values<O extends Options> = ReturnType<typeof parseArgs<{ options: O, strict: true, allowPositionals: true }>>['values']

export interface CommandLine<O extends Options, P extends string> {
  /** The command's line in `tokenline help`, from `tokenline` on. */
  usage: string
  options?: O
  /** The positional arguments it requires, in order, named as in `usage`. */
  positionals?: readonly P[]
  /**
   * The arguments follow a subcommand (`tokenline user add`). A command typed with nothing after it
   * is asked for its usage, but a subcommand has been chosen and only lacks an argument: the message
   * names it.
   */
  subcommand?: boolean
}

export interface ParsedCommand<O extends Options, P extends string> {
  values: Values<O>
  positionals: Record<P, string>
}

const usageError = (usage: string): CliError => new CliError(`usage: ${usage}`, 2)

/** Reads a command's arguments (after its name) strictly, or throws the usage error that fits. */
export function parseCommand<O extends Options = Record<never, never>, P extends string = never> (
  args: readonly string[],
  line: CommandLine<O, P>
): ParsedCommand<O, P> {
  const options = line.options ?? ({} as O)
  const names = line.positionals ?? []
  // Nothing in what it was given could be right, so there is nothing better to point at.
  if (args.length > 0 && names.length === 0 && Object.keys(options).length === 0) throw usageError(line.usage)
  let parsed
  try {
    // Where the command takes positional arguments, parseArgs lets any number through, to be counted
    // below; where it takes none, parseArgs says so itself and does not suggest `--` for one.
    parsed = parseArgs({ args: [...args], options, allowPositionals: names.length > 0, strict: true })
  } catch (err) {
    // Its first line only: a failed command prints exactly one line.
    throw new CliError(`${(err as Error).message.split('\n')[0] ?? 'bad arguments'} (usage: ${line.usage})`, 2)
  }
  const given = parsed.positionals
  const missing = names[given.length]
  if (missing !== undefined) {
    if (args.length === 0 && line.subcommand !== true) throw usageError(line.usage)
    throw new CliError(`missing <${missing}> (usage: ${line.usage})`, 2)
  }
  if (given.length > names.length) throw new CliError(`unexpected argument ${JSON.stringify(given[names.length])} (usage: ${line.usage})`, 2)
  return {
    values: parsed.values as Values<O>,
    positionals: Object.fromEntries(names.map((name, i) => [name, given[i]])) as Record<P, string>
  }
}

/** A command's subcommand (`add` in `tokenline user add`), or the group's usage error. */
export function subcommand<S extends string> (args: readonly string[], names: readonly S[], usage: string): [S, string[]] {
  const [name, ...rest] = args
  if (!names.includes(name as S)) throw usageError(usage)
  return [name as S, rest]
}

/** The settings from the environment (TOKENLINE_*), as the server resolves them. */
export const cliOptions = (io: Io): ResolvedOptions => resolveOptions(fromEnv(io.env).options)

/**
 * A SQLite database setting that names no file yet: the one-line error saying so. The CLI never creates
 * a database (a mistyped TOKENLINE_DB, or a command run from another directory, would otherwise get a
 * new empty one, and the user or client it adds would be where no server looks); the server does, on
 * its first start.
 */
export function missingDatabase (database: string): CliError | undefined {
  if (isPostgresUrl(database) || database === ':memory:' || existsSync(database)) return undefined
  return new CliError(`database ${resolve(database)} does not exist: start the server once (npm start) to create it, or set TOKENLINE_DB to the server's database`)
}

/**
 * Opens the database named by TOKENLINE_DB (default ./data/tokenline.db), which must exist, runs
 * `use`, and closes the database whatever happens, so that no command leaves it open behind an error.
 */
export async function withStore<T> (io: Io, use: (context: { store: Store, opts: ResolvedOptions }) => Promise<T>): Promise<T> {
  const opts = cliOptions(io)
  const missing = missingDatabase(opts.database)
  if (missing !== undefined) throw missing
  // mustExist as well: a file deleted since the check above is still not created.
  const store = await openStore(opts.database, { pgPoolSize: opts.pgPoolSize, pgStatementTimeoutMs: opts.pgStatementTimeout * 1000, mustExist: true })
  try {
    return await use({ store, opts })
  } finally {
    await store.close()
  }
}
