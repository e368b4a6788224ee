import { normaliseUsername, MAX_USERNAME } from '../security/passwords.js'
import { parseCommand, withStore } from './command.js'
import { CliError, type Io } from './io.js'

/**
 * `tokenline unlock <username>`: clears the account's password-failure counters (every source), so
 * its back-off ends now instead of when it expires. Works for names with no account too, since
 * they are counted the same way. The attacker, if still at it, starts over at the threshold.
 */
export async function unlockCommand (args: string[], io: Io): Promise<void> {
  const { positionals } = parseCommand(args, { usage: 'tokenline unlock <username>', positionals: ['username'] })
  const username = normaliseUsername(positionals.username)
  if (username === '' || username.length > MAX_USERNAME) throw new CliError(`username must be 1 to ${MAX_USERNAME} characters`, 2)
  const cleared = await withStore(io, async ({ store, opts }) => {
    const user = await store.findUserByUsername(username)
    return await store.clearLoginFailures({ username, now: opts.now(), events: [{ type: 'login_unlocked', userId: user?.id ?? null, detail: { username } }] })
  })
  io.stdout.write(cleared === 0 ? `${username} had no failed logins on record\n` : `cleared the failed logins of ${username}\n`)
}
