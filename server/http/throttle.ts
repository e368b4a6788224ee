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
 * Per-address throttling of the token endpoint (RFC 6749 §4.3.2 MUST, RFC 6819 §4.4.3.6, RFC 6585 §4 for
 * 429). Two fixed-window budgets, both keyed on the client address (`request.ip`: the socket, unless the
 * host configured a trusted proxy, so a made-up X-Forwarded-For changes nothing; IPv6 per /64):
 *
 * - password grants, every attempt counted (a guess that happens to be right costs the same, and so
 *   does a refused one);
 * - failed requests of every other kind. Only failures are counted, once the outcome is known, so a
 *   busy SPA or a benchmark refreshing thousands of times a minute never spends it: the budget is read
 *   without counting before the request (one indexed read, the whole cost of the budget to a successful
 *   refresh), and counted after it, once it failed.
 *
 * The counts are kept in the database (`Store.hitBudget` and `peekBudget`, keyed `password:<address>`
 * and `failures:<address>`), so every process on the database shares one budget per address: running
 * N processes does not hand an attacker N budgets, and a restart forgets nothing. Each hit is counted
 * atomically and sees its own count, so exactly one request per address and window, in whichever
 * process, records the `throttled` event: the failure that spends the failures budget, or the first
 * password grant over the password budget.
 *
 * Windows follow Tokenline's clock (`opts.now`), which tests move instead of sleeping. A host's own
 * @fastify/rate-limit, if it registered one, neither replaces nor counts these budgets.
 */

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
export function registerThrottles (scope: FastifyInstance, tl: Tokenline): void {
  const { throttlePassword, throttlePasswordWindow, throttleFailures, throttleFailuresWindow, now } = tl.opts
  if (throttlePassword === 0 && throttleFailures === 0) return

  const report = async (request: FastifyRequest, budget: 'password' | 'failures', limit: number, window: number): Promise<void> => {
    const events: SecurityEvent[] = [{ type: 'throttled', ip: clientIp(request), reason: budget, detail: { limit, window } }]
    await tl.store.recordEvents(events, now())
    logEvents(tl, request.log, events)
  }

  if (throttleFailures > 0) {
    const windowMs = throttleFailuresWindow * 1000
    scope.addHook('onRequest', async (request: FastifyRequest) => {
      const at = now()
      const b = await tl.store.peekBudget(`failures:${addressKey(request)}`, at)
      if (b.count >= throttleFailures) throw throttled(b.resetAt - at)
    })
    // onSend, not onResponse: the failure is counted before the caller can read it and try again.
    scope.addHook('onSend', async (request: FastifyRequest, reply: FastifyReply) => {
      const status = reply.statusCode
      // 429 and 503 are our own refusals, not the caller's failures; password grants have their own budget.
      if (status < 400 || status === 429 || status === 503 || isPasswordGrant(request)) return
      const b = await tl.store.hitBudget(`failures:${addressKey(request)}`, windowMs, now())
      // The failure that spends the budget; later ones are refused before they can fail (unless in flight).
      if (b.count === throttleFailures) await report(request, 'failures', throttleFailures, throttleFailuresWindow)
    })
  }

  if (throttlePassword > 0) {
    const windowMs = throttlePasswordWindow * 1000
    // preHandler: the body is parsed by now, so only password grants are counted.
    scope.addHook('preHandler', async (request: FastifyRequest) => {
      if (!isPasswordGrant(request)) return
      const at = now()
      const b = await tl.store.hitBudget(`password:${addressKey(request)}`, windowMs, at)
      if (b.count <= throttlePassword) return
      // The first attempt over the budget in this window, whichever process it reached.
      if (b.count === throttlePassword + 1) await report(request, 'password', throttlePassword, throttlePasswordWindow)
      throw throttled(b.resetAt - at)
    })
  }
}
