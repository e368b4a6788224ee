import { prune } from '../sessions/janitor.js'
import { CliError, openStore, type Io } from './io.js'

/** `tokenline prune`: one janitor pass now (the server runs the same every TOKENLINE_JANITOR_INTERVAL). */
export async function pruneCommand (args: string[], io: Io): Promise<void> {
  if (args.length > 0) throw new CliError('usage: tokenline prune (retention: TOKENLINE_EVENT_RETENTION)', 2)
  const { store, opts } = openStore(io)
  try {
    const r = await prune(store, opts.now(), opts.eventRetention)
    const days = opts.eventRetention / 86400
    const retention = opts.eventRetention === 0 ? 'security events are kept forever (TOKENLINE_EVENT_RETENTION=0)' : `${r.events} security event${r.events === 1 ? '' : 's'} older than ${Number.isInteger(days) ? `${days} days` : `${opts.eventRetention} s`}`
    io.stdout.write(`pruned ${r.sessions} expired session${r.sessions === 1 ? '' : 's'} (${r.tokens} refresh token${r.tokens === 1 ? '' : 's'}) and ${retention}\n`)
  } finally {
    store.close()
  }
}
