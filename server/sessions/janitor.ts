import type { FastifyBaseLogger } from 'fastify'
import type { Store } from '../../db/store.js'
import type { Tokenline } from '../context.js'

/**
 * Sessions deleted per transaction. Each batch holds the write lock for a few milliseconds, so a
 * refresh waiting behind it (busy_timeout 5 s) is never stalled for long.
 */
export const PRUNE_BATCH = 500

export interface PruneReport {
  sessions: number
  tokens: number
  events: number
}

/** Lets queued requests of this process run between batches (other processes get the lock anyway). */
const yieldTurn = async (): Promise<void> => await new Promise((resolve) => setImmediate(resolve))

/**
 * Deletes what nothing needs any more, in small immediate transactions:
 *
 * - sessions past their absolute expiry, with their whole lineage (ON DELETE CASCADE), whether they
 *   ended by revocation, idleness or age. A session that is still within its absolute lifetime keeps
 *   every consumed token, so a replay of any of them is still recognised as reuse (RFC 9700 §4.14.2);
 * - security events older than `eventRetention` seconds (0 keeps them forever).
 */
export async function prune (store: Store, now: number, eventRetention: number, batch = PRUNE_BATCH): Promise<PruneReport> {
  const report: PruneReport = { sessions: 0, tokens: 0, events: 0 }
  for (;;) {
    const r = await store.pruneSessions(now, batch)
    report.sessions += r.sessions
    report.tokens += r.tokens
    if (r.sessions < batch) break
    await yieldTurn()
  }
  if (eventRetention > 0) {
    const before = now - eventRetention * 1000
    for (;;) {
      const n = await store.pruneEvents(before, batch)
      report.events += n
      if (n < batch) break
      await yieldTurn()
    }
  }
  return report
}

export interface Janitor {
  /** Runs one pass now (the timer runs the same); resolves with what was pruned. */
  run: () => Promise<PruneReport>
  /** Whether a periodic timer is scheduled (`janitorInterval` > 0). */
  readonly scheduled: boolean
  stop: () => void
}

/**
 * The server's periodic janitor: every `janitorInterval` seconds (0 disables it), one `prune` pass.
 * The first pass comes one interval after start, so a test or a short-lived process never sees it.
 * The timer is unref'd: it never keeps the process alive, and the plugin stops it on close.
 */
export function startJanitor (tl: Tokenline, log: FastifyBaseLogger): Janitor {
  let running: Promise<PruneReport> | undefined
  let stopped = false
  const run = async (): Promise<PruneReport> => {
    // One pass at a time: a slow pass is not doubled up by the next tick.
    running ??= prune(tl.store, tl.opts.now(), tl.opts.eventRetention).finally(() => { running = undefined })
    return await running
  }
  const tick = (): void => {
    if (stopped) return
    run().then((r) => {
      if (r.sessions + r.events > 0) log.info({ janitor: r }, `janitor pruned ${r.sessions} sessions (${r.tokens} refresh tokens) and ${r.events} security events`)
    }, (err: unknown) => {
      // A busy or closed database is retried next time; the janitor never takes the server down.
      if (!stopped) log.warn({ err }, 'janitor pass failed')
    })
  }
  const interval = tl.opts.janitorInterval
  const timer = interval > 0 ? setInterval(tick, interval * 1000).unref() : undefined
  return {
    run,
    scheduled: timer !== undefined,
    stop () {
      stopped = true
      if (timer !== undefined) clearInterval(timer)
    }
  }
}
