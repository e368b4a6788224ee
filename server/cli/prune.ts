import { prune } from '../sessions/janitor.js'
import { parseCommand, withStore } from './command.js'
import { plural, type Io } from './io.js'

/** `tokenline prune`: one janitor pass now (the server runs the same every TOKENLINE_JANITOR_INTERVAL). */
export async function pruneCommand (args: string[], io: Io): Promise<void> {
  parseCommand(args, { usage: 'tokenline prune (retention: TOKENLINE_EVENT_RETENTION)' })
  const { pruned, retention } = await withStore(io, async ({ store, opts }) => ({ pruned: await prune(store, opts.now(), opts.eventRetention), retention: opts.eventRetention }))
  const days = retention / 86400
  const events = retention === 0
    ? 'security events are kept forever (TOKENLINE_EVENT_RETENTION=0)'
    : `${plural(pruned.events, 'security event')} older than ${Number.isInteger(days) ? `${days} days` : `${retention} s`}`
  io.stdout.write(`pruned ${plural(pruned.sessions, 'expired session')} (${plural(pruned.tokens, 'refresh token')}) and ${events}\n`)
}
