import { normaliseUsername, MAX_USERNAME } from '../security/passwords.js'
import { CliError, openStore, type Io } from './io.js'

/**
 * `tokenline unlock <username>`: clears the account's password-failure counters (every source), so
 * its back-off ends now instead of when it expires. Works for names with no account too, since
 * they are counted the same way. The attacker, if still at it, starts over at the threshold.
 */
export async function unlockCommand (args: string[], io: Io): Promise<void> {
  const [raw, extra] = args
  if (raw === undefined) throw new CliError('usage: tokenline unlock <username>', 2)
  if (extra !== undefined) throw new CliError(`unexpected argument ${JSON.stringify(extra)}`, 2)
  const username = normaliseUsername(raw)
  if (username === '' || username.length > MAX_USERNAME) throw new CliError(`username must be 1 to ${MAX_USERNAME} characters`, 2)
  const { store, opts } = openStore(io)
  try {
    const user = await store.findUserByUsername(username)
    const n = await store.clearLoginFailures({ username, now: opts.now(), events: [{ type: 'login_unlocked', userId: user?.id ?? null, detail: { username } }] })
    io.stdout.write(n === 0 ? `${username} had no failed logins on record\n` : `cleared the failed logins of ${username}\n`)
  } finally {
    store.close()
  }
}
