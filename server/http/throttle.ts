import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { isIPv6 } from 'node:net'
import type { SecurityEvent } from '../../db/store.js'
import { logEvents, type Tokenline } from '../context.js'
import { OAuthError } from '../errors.js'
import { ipPrefix, normaliseIp } from '../security/fingerprint.js'

/*
 * Per-IP throttling of the token endpoint (RFC 6749 §4.3.2 MUST, RFC 6819 §4.4.3.6, RFC 6585 §4 for 429).
 * Two budgets, both keyed on the client address (`request.ip`: the socket, unless the host configured
 * a trusted proxy, so a made-up X-Forwarded-For changes nothing):
 *
 * - password grants, every attempt counted (a guess that happens to be right costs the same), through
 *   @fastify/rate-limit's `createRateLimit`;
 * - failed requests of every other kind. Only failures are counted, once the outcome is known, so a
 *   busy SPA or a benchmark refreshing thousands of times a minute never spends it. The count must be
 *   read before the request (to refuse it) and written after (once it failed), and the plugin's
 *   limiter always counts when asked, so this budget uses the same counter directly.
 *
 * Both run on Tokenline's clock, so tests move time instead of sleeping. Counters live in memory: a
 * restart forgets them, which is fine for a one-minute window. The per-account counter, which must
 * survive restarts, is in SQLite (server/security/lockout.ts).
 */

/** Addresses remembered per budget; the least recently seen are forgotten first. ~100 bytes each. */
const CAPACITY = 50_000

interface Entry { count: number, start: number, window: number }

/**
 * A fixed-window counter per key on an injected clock, bounded in size. It is also a store for
 * @fastify/rate-limit (`incr`, `child`), whose own store reads `Date.now()`.
 */
export class WindowCounter {
  readonly #now: () => number
  readonly #entries = new Map<string, Entry>()

  constructor (now: () => number) {
    this.#now = now
  }

  /** Counts one hit; returns the count in the current window and when that window ends (ms). */
  hit (key: string, windowMs: number): { count: number, resetAt: number } {
    const now = this.#now()
    let e = this.#entries.get(key)
    if (e === undefined || now >= e.start + e.window) e = { count: 0, start: now, window: windowMs }
    e.count++
    // Re-inserting keeps the Map in least-recently-used order: the first key is the stalest.
    this.#entries.delete(key)
    this.#entries.set(key, e)
    if (this.#entries.size > CAPACITY) this.#entries.delete(this.#entries.keys().next().value as string)
    return { count: e.count, resetAt: e.start + e.window }
  }

  /** The current window's count, without counting. */
  peek (key: string): { count: number, resetAt: number } | undefined {
    const e = this.#entries.get(key)
    if (e === undefined || this.#now() >= e.start + e.window) return undefined
    return { count: e.count, resetAt: e.start + e.window }
  }

  /** @fastify/rate-limit store interface. */
  incr (key: string, cb: (err: Error | null, result?: { current: number, ttl: number }) => void, timeWindow = 60_000): void {
    const { count, resetAt } = this.hit(key, timeWindow)
    cb(null, { current: count, ttl: resetAt - this.#now() })
  }

  child (): WindowCounter {
    return new WindowCounter(this.#now)
  }
}

/** The throttling key of a request: its address, or its /64 for IPv6 (one subscriber gets a whole /64). */
export function addressKey (request: FastifyRequest): string {
  const ip = normaliseIp(request.ip)
  return isIPv6(ip) ? ipPrefix(ip) : ip
}

/** RFC 6585 §4, with an RFC 6749 §5.2 body; no registered error code fits better than `invalid_request`. */
export function throttled (retryAfterMs: number): OAuthError {
  const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000))
  return new OAuthError('invalid_request', 'too many requests, retry later', { status: 429, headers: { 'retry-after': String(seconds) } })
}

const isPasswordGrant = (request: FastifyRequest): boolean =>
  (request.body as Record<string, unknown> | null | undefined)?.grant_type === 'password'

/**
 * Adds both budgets to the encapsulated context of the token endpoint; call before its routes are
 * registered. Records one `throttled` event per address per window, not one per refused request
 * (which would let a flood write to the database at will).
 */
export async function registerThrottles (scope: FastifyInstance, tl: Tokenline): Promise<void> {
  const { throttlePassword, throttlePasswordWindow, throttleFailures, throttleFailuresWindow, now } = tl.opts

  const report = async (request: FastifyRequest, budget: 'password' | 'failures', limit: number, window: number): Promise<void> => {
    const events: SecurityEvent[] = [{ type: 'throttled', ip: normaliseIp(request.ip), reason: budget, detail: { limit, window } }]
    await tl.store.recordEvents(events, now())
    logEvents(tl, request.log, events)
  }

  if (throttleFailures > 0) {
    const failures = new WindowCounter(now)
    scope.addHook('onRequest', async (request: FastifyRequest) => {
      const seen = failures.peek(addressKey(request))
      if (seen !== undefined && seen.count >= throttleFailures) throw throttled(seen.resetAt - now())
    })
    // onSend, not onResponse: the failure is counted before the caller can read it and try again.
    scope.addHook('onSend', async (request: FastifyRequest, reply: FastifyReply) => {
      const status = reply.statusCode
      // 429 and 503 are our own refusals, not the caller's failures; password grants have their own budget.
      if (status < 400 || status === 429 || status === 503 || isPasswordGrant(request)) return
      const { count } = failures.hit(addressKey(request), throttleFailuresWindow * 1000)
      if (count === throttleFailures) await report(request, 'failures', throttleFailures, throttleFailuresWindow)
    })
  }

  if (throttlePassword > 0) {
    const Store = class extends WindowCounter { constructor () { super(now) } }
    await scope.register(rateLimit, { global: false, store: Store, keyGenerator: addressKey })
    // The key is given here too: if the host registered @fastify/rate-limit first, `createRateLimit`
    // is the host's, with the host's defaults.
    const attempt = scope.createRateLimit({ max: throttlePassword, timeWindow: throttlePasswordWindow * 1000, keyGenerator: addressKey })
    // Which addresses were already reported in their current window.
    const reported = new WindowCounter(now)
    // preHandler: the body is parsed by now, so only password grants are counted.
    scope.addHook('preHandler', async (request: FastifyRequest) => {
      if (!isPasswordGrant(request)) return
      const r = await attempt(request)
      if (r.isAllowed || !r.isExceeded) return
      if (reported.hit(r.key, r.ttl).count === 1) await report(request, 'password', throttlePassword, throttlePasswordWindow)
      throw throttled(r.ttl)
    })
  }
}
