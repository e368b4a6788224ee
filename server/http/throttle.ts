import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { isIPv6 } from 'node:net'
import type { SecurityEvent } from '../../db/store.js'
import type { Tokenline } from '../context.js'
import { logEvents } from '../sessions/events.js'
import { OAuthError } from '../errors.js'
import { grantType as PASSWORD_GRANT } from '../grants/password.js'
import { ipPrefix } from '../security/fingerprint.js'
import { clientIp } from './request-meta.js'

/*
 * Per-IP throttling of the token endpoint (RFC 6749 §4.3.2 MUST, RFC 6819 §4.4.3.6, RFC 6585 §4 for 429).
 * Two budgets, both keyed on the client address (`request.ip`: the socket, unless the host configured
 * a trusted proxy, so a made-up X-Forwarded-For changes nothing), both counted by @fastify/rate-limit's
 * `createRateLimit`:
 *
 * - password grants, every attempt counted (a guess that happens to be right costs the same);
 * - failed requests of every other kind. Only failures are counted, once the outcome is known, so a
 *   busy SPA or a benchmark refreshing thousands of times a minute never spends it: the budget is read
 *   without counting (`increment: false`) before the request, and counted after it, once it failed.
 *
 * If the host registered @fastify/rate-limit first, `createRateLimit` is the host's, with the host's
 * store and defaults (the store must read without counting, as 11.x's built-in ones do); the key,
 * limits and windows are always given here, so they stay Tokenline's.
 *
 * Counters live in memory: a restart forgets them, which is fine for a one-minute window. The
 * per-account counter, which must survive restarts, is in SQLite (server/security/lockout.ts).
 */

/** Addresses remembered per budget; the least recently seen are forgotten first. ~100 bytes each. */
const CAPACITY = 50_000

interface Entry { count: number, start: number, window: number }

type Result = (err: Error | null, result?: { current: number, ttl: number }) => void

/**
 * Hand-written because @fastify/rate-limit's own store reads `Date.now()`, not Tokenline's clock.
 * A fixed-window counter per key, bounded in size; `incr`, `read` and `child` make it a store for the
 * plugin, and tests move its clock instead of sleeping.
 */
export class ClockStore {
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

  /** @fastify/rate-limit store interface: count one request. */
  incr (key: string, cb: Result, timeWindow = 60_000): void {
    const { count, resetAt } = this.hit(key, timeWindow)
    cb(null, { current: count, ttl: resetAt - this.#now() })
  }

  /** @fastify/rate-limit store interface: the current window's count, without counting (`increment: false`). */
  read (key: string, cb: Result): void {
    const e = this.#entries.get(key)
    const now = this.#now()
    if (e === undefined || now >= e.start + e.window) cb(null, { current: 0, ttl: 0 })
    else cb(null, { current: e.count, ttl: e.start + e.window - now })
  }

  child (): ClockStore {
    return new ClockStore(this.#now)
  }
}

/** The throttling key of a request: its address, or its /64 for IPv6 (one subscriber gets a whole /64). */
export function addressKey (request: FastifyRequest): string {
  const ip = clientIp(request)
  return isIPv6(ip) ? ipPrefix(ip) : ip
}

/** RFC 6585 §4, with an RFC 6749 §5.2 body; no registered error code fits better than `invalid_request`. */
export function throttled (retryAfterMs: number): OAuthError {
  const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000))
  return new OAuthError('invalid_request', 'too many requests, retry later', { status: 429, headers: { 'retry-after': String(seconds) } })
}

const isPasswordGrant = (request: FastifyRequest): boolean =>
  (request.body as Record<string, unknown> | null | undefined)?.grant_type === PASSWORD_GRANT

/**
 * Adds both budgets to the encapsulated context of the token endpoint; call before its routes are
 * registered. Records one `throttled` event per address per window, not one per refused request
 * (which would let a flood write to the database at will).
 */
export async function registerThrottles (scope: FastifyInstance, tl: Tokenline): Promise<void> {
  const { throttlePassword, throttlePasswordWindow, throttleFailures, throttleFailuresWindow, now } = tl.opts
  if (throttlePassword === 0 && throttleFailures === 0) return

  const report = async (request: FastifyRequest, budget: 'password' | 'failures', limit: number, window: number): Promise<void> => {
    const events: SecurityEvent[] = [{ type: 'throttled', ip: clientIp(request), reason: budget, detail: { limit, window } }]
    await tl.store.recordEvents(events, now())
    logEvents(tl, request.log, events)
  }

  const Store = class extends ClockStore { constructor () { super(now) } }
  await scope.register(rateLimit, { global: false, store: Store, keyGenerator: addressKey })
  // The key is given here too: if the host registered @fastify/rate-limit first, `createRateLimit`
  // is the host's, with the host's defaults. Each limiter gets a store of its own (`child`).
  const limiter = (max: number, windowS: number): ReturnType<FastifyInstance['createRateLimit']> =>
    scope.createRateLimit({ max, timeWindow: windowS * 1000, keyGenerator: addressKey })

  if (throttleFailures > 0) {
    const failures = limiter(throttleFailures, throttleFailuresWindow)
    scope.addHook('onRequest', async (request: FastifyRequest) => {
      const r = await failures(request, { increment: false })
      if (!r.isAllowed && r.remaining === 0) throw throttled(r.ttl)
    })
    // onSend, not onResponse: the failure is counted before the caller can read it and try again.
    scope.addHook('onSend', async (request: FastifyRequest, reply: FastifyReply) => {
      const status = reply.statusCode
      // 429 and 503 are our own refusals, not the caller's failures; password grants have their own budget.
      if (status < 400 || status === 429 || status === 503 || isPasswordGrant(request)) return
      const r = await failures(request)
      // Exactly one failure per window leaves nothing remaining without exceeding: the one that spends it.
      if (!r.isAllowed && r.remaining === 0 && !r.isExceeded) await report(request, 'failures', throttleFailures, throttleFailuresWindow)
    })
  }

  if (throttlePassword > 0) {
    const attempt = limiter(throttlePassword, throttlePasswordWindow)
    // Which addresses were already reported in their current window.
    const reported = new ClockStore(now)
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
