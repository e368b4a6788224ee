import { CONTROL_CHARACTERS, createPasswords, MAX_PASSWORD, MAX_USERNAME, normaliseUsername } from '../security/passwords.js'
import { randomId } from '../tokens/refresh-format.js'
import { parseCommand, subcommand, withStore } from './command.js'
import { CliError, iso, plural, readPassword, table, type Io } from './io.js'

/** ASVS 5.0 6.2.1: at least 8 characters. */
export const MIN_PASSWORD = 8

const USAGE = 'tokenline user add|passwd|disable|enable <username> | user list'

export function validUsername (raw: string): string {
  const name = normaliseUsername(raw)
  if (name === '' || name.length > MAX_USERNAME) throw new CliError(`username must be 1 to ${MAX_USERNAME} characters`, 2)
  if (CONTROL_CHARACTERS.test(name) || /\s/.test(name)) throw new CliError('username must not contain spaces or control characters', 2)
  return name
}

async function newPassword (io: Io): Promise<string> {
  const pw = await readPassword(io, 'password: ')
  if (pw.length < MIN_PASSWORD) throw new CliError(`password must be at least ${MIN_PASSWORD} characters`)
  if (pw.length > MAX_PASSWORD) throw new CliError(`password must be at most ${MAX_PASSWORD} characters`)
  return pw
}

export async function userCommand (args: string[], io: Io): Promise<void> {
  const [action, rest] = subcommand(args, ['add', 'passwd', 'disable', 'enable', 'list'], USAGE)
  if (action === 'list') {
    parseCommand(rest, { usage: 'tokenline user list' })
    const users = await withStore(io, async ({ store }) => await store.listUsers())
    io.stdout.write(table([['USERNAME', 'ID', 'STATUS', 'CREATED'], ...users.map((u) => [u.username, u.id, u.disabledAt === null ? 'active' : 'disabled', iso(u.createdAt)])]))
    return
  }
  const { positionals } = parseCommand(rest, { usage: `tokenline user ${action} <username>`, positionals: ['username'], subcommand: true })
  const username = validUsername(positionals.username)
  const said = await withStore(io, async ({ store, opts }) => {
    const existing = await store.findUserByUsername(username)
    if (action === 'add') {
      if (existing !== undefined) throw new CliError(`user ${username} already exists`)
      const hash = await createPasswords(opts.argon2).hash(await newPassword(io))
      const id = randomId()
      await store.createUser({ id, username, passwordHash: hash, now: opts.now() })
      await store.recordEvents([{ type: 'user_created', userId: id }], opts.now())
      return `created user ${username} (id ${id})`
    }
    if (existing === undefined) throw new CliError(`no user ${username}`)
    if (action === 'passwd') {
      const hash = await createPasswords(opts.argon2).hash(await newPassword(io))
      // Policy: a password change ends every session of the user (they may be the attacker's).
      const n = await store.setPasswordHash({ userId: existing.id, passwordHash: hash, now: opts.now(), revokeReason: 'password_changed', events: [{ type: 'password_changed', userId: existing.id }] })
      return `changed password of ${username}; revoked ${plural(n, 'session')}`
    }
    const disable = action === 'disable'
    const n = await store.setUserDisabled({ userId: existing.id, disabled: disable, now: opts.now(), events: [{ type: disable ? 'user_disabled' : 'user_enabled', userId: existing.id }] })
    return disable ? `disabled ${username}; revoked ${plural(n, 'session')}` : `enabled ${username}`
  })
  io.stdout.write(said + '\n')
}
