import { ConfigError, unknownSettings } from '../options.js'
import { backupCommand } from './backup.js'
import { clientCommand } from './clients.js'
import { copyCommand } from './copy.js'
import { CliError, defaultIo, type Io } from './io.js'
import { StoreError } from '../../db/store.js'
import { keysCommand } from './keys.js'
import { userCommand } from './users.js'
import { eventsCommand } from './events.js'
import { pruneCommand } from './prune.js'
import { lineageCommand, revokeCommand, sessionsCommand } from './sessions.js'
import { unlockCommand } from './unlock.js'

const USAGE = `usage: tokenline <command>

  serve                                  run the server (same as npm start)
  user add <username>                    password from stdin (one line) or prompted on a terminal
  user passwd <username>                 new password; revokes the user's sessions
  user disable|enable <username>
  user list
  client add <client_id> [--confidential] [--delivery cookie|body|both]
             [--origin <url>]... [--grants password,refresh_token] [--scopes "a b"]
                                         delivery defaults to cookie with an --origin, else body
  client update <client_id> [--delivery cookie|body|both] [--origin <url>]... [--grants ...] [--scopes "a b"]
                                         change only the fields given (--origin replaces the list)
  client remove <client_id>              delete the client; revokes its live sessions at once
  client list
  sessions <username>                    the user's sessions: live, revoked (why) or expired, and their binding
  revoke --session <id> | --user <username>
                                         end one session, or every session of a user
  lineage <session_id>                   the session's token chain: issued/used when, where; reuse, revocation
  events [--user <username>] [--session <id>] [--limit <n>]
                                         the audit trail, oldest first
  prune                                  delete expired sessions with their lineage, and old security events
  unlock <username>                      end a password back-off now (clears the account's failed logins)
  keys rotate [--drop-old]               new signing key; the old one stays in the JWKS until its tokens expire
                                         (--drop-old: unpublish it now, for a key that may have leaked)
  keys list
  backup <file> [--force]                online backup of the live database (safe while servers run)
  copy --to <database>                   copy every row into another, empty database: a SQLite file or a
                                         postgres:// URL (SQLite -> PostgreSQL and back); stop servers first

The database is TOKENLINE_DB (default ./data/tokenline.db).
`

type Command = (args: string[], io: Io) => Promise<void>

export const COMMANDS: Record<string, Command> = {
  user: userCommand,
  sessions: sessionsCommand,
  revoke: revokeCommand,
  lineage: lineageCommand,
  events: eventsCommand,
  prune: pruneCommand,
  unlock: unlockCommand,
  client: clientCommand,
  keys: keysCommand,
  backup: backupCommand,
  copy: copyCommand
}

/** Runs one CLI command; returns the exit status. Every failure is one line on stderr. */
export async function main (argv: string[], io: Io = defaultIo()): Promise<number> {
  const [name, ...args] = argv
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    (name === undefined ? io.stderr : io.stdout).write(USAGE)
    return name === undefined ? 2 : 0
  }
  if (name === 'serve') {
    if (args.length > 0) { io.stderr.write('tokenline: serve takes no arguments; configure it with environment variables\n'); return 2 }
    // Loaded only here: the server's modules (Fastify and its plugins) would add about half a second
    // to every other command's start.
    const { serve } = await import('../standalone/main.js')
    return await serve(io.env)
  }
  const command = COMMANDS[name]
  if (command === undefined) {
    io.stderr.write(`tokenline: unknown command ${JSON.stringify(name)} (tokenline help lists them)\n`)
    return 2
  }
  // `serve` says the same in its log.
  for (const warning of unknownSettings(io.env)) io.stderr.write(`tokenline: warning: ${warning}\n`)
  try {
    await command(args, io)
    return 0
  } catch (err) {
    if (err instanceof CliError) { io.stderr.write(`tokenline: ${err.message}\n`); return err.code }
    if (err instanceof ConfigError) { io.stderr.write(`tokenline: ${err.message}\n`); return 2 }
    if (err instanceof StoreError) { io.stderr.write(`tokenline: ${err.message}\n`); return 1 }
    const code = (err as { code?: string }).code
    if (typeof code === 'string' && code.startsWith('SQLITE_')) { io.stderr.write(`tokenline: database error (${code})\n`); return 1 }
    // PostgreSQL's own refusals carry a five-character SQLSTATE.
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) { io.stderr.write(`tokenline: database error (${code}): ${(err as Error).message.split('\n')[0] ?? ''}\n`); return 1 }
    // A TOKENLINE_DB whose directory cannot be created (a parent is a file, no permission, read-only
    // file system) is a bad setting, not a crash: one line instead of a stack trace.
    const path = (err as { path?: unknown }).path
    if (typeof code === 'string' && typeof path === 'string' && /^E[A-Z]+$/.test(code)) {
      io.stderr.write(`tokenline: cannot use ${JSON.stringify(path)} (${code})\n`)
      return 1
    }
    throw err
  }
}
