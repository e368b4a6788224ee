import { createPasswords, MAX_PASSWORD, MAX_USERNAME, normaliseUsername } from '../security/passwords.js'
import { randomId } from '../tokens/refresh-format.js'
import { CliError, iso, openStore, readPassword, table, type Io } from './io.js'

/** ASVS 5.0 6.2.1: at least 8 characters. */
export const MIN_PASSWORD = 8

export function validUsername (raw: string | undefined): string {
  if (raw === undefined) throw new CliError('missing <username>', 2)
  const name = normaliseUsername(raw)
  if (name === '' || name.length > MAX_USERNAME) throw new CliError(`username must be 1 to ${MAX_USERNAME} characters`, 2)
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f\s]/.test(name)) throw new CliError('username must not contain spaces or control characters', 2)
  return name
}

async function newPassword (io: Io): Promise<string> {
  const pw = await readPassword(io, 'password: ')
  if (pw.length < MIN_PASSWORD) throw new CliError(`password must be at least ${MIN_PASSWORD} characters`)
  if (pw.length > MAX_PASSWORD) throw new CliError(`password must be at most ${MAX_PASSWORD} characters`)
  return pw
}

export async function userCommand (args: string[], io: Io): Promise<void> {
  const [sub, rawName] = args
  if (sub === 'list') return await listUsers(io)
  if (sub !== 'add' && sub !== 'passwd' && sub !== 'disable' && sub !== 'enable') {
    throw new CliError('usage: tokenline user add|passwd|disable|enable <username> | user list', 2)
  }
  if (args.length > 2) throw new CliError(`unexpected argument ${JSON.stringify(args[2])}`, 2)
  const username = validUsername(rawName)
  const { store, opts } = openStore(io)
  try {
    const existing = await store.findUserByUsername(username)
    if (sub === 'add') {
      if (existing !== undefined) throw new CliError(`user ${username} already exists`)
      const hash = await createPasswords(opts.argon2).hash(await newPassword(io))
      const id = randomId()
      await store.createUser({ id, username, passwordHash: hash, now: opts.now() })
      await store.recordEvents([{ type: 'user_created', userId: id }], opts.now())
      io.stdout.write(`created user ${username} (id ${id})\n`)
      return
    }
    if (existing === undefined) throw new CliError(`no user ${username}`)
    if (sub === 'passwd') {
      const hash = await createPasswords(opts.argon2).hash(await newPassword(io))
      // Policy: a password change ends every session of the user (they may be the attacker's).
      const n = await store.setPasswordHash({ userId: existing.id, passwordHash: hash, now: opts.now(), revokeReason: 'password_changed', events: [{ type: 'password_changed', userId: existing.id }] })
      io.stdout.write(`changed password of ${username}; revoked ${n} session${n === 1 ? '' : 's'}\n`)
      return
    }
    const disable = sub === 'disable'
    const n = await store.setUserDisabled({ userId: existing.id, disabled: disable, now: opts.now(), events: [{ type: disable ? 'user_disabled' : 'user_enabled', userId: existing.id }] })
    io.stdout.write(disable ? `disabled ${username}; revoked ${n} session${n === 1 ? '' : 's'}\n` : `enabled ${username}\n`)
  } finally {
    store.close()
  }
}

async function listUsers (io: Io): Promise<void> {
  const { store } = openStore(io)
  try {
    const users = await store.listUsers()
    io.stdout.write(table([['USERNAME', 'ID', 'STATUS', 'CREATED'], ...users.map((u) => [u.username, u.id, u.disabledAt === null ? 'active' : 'disabled', iso(u.createdAt)])]))
  } finally {
    store.close()
  }
}
