import type { FastifyBaseLogger } from 'fastify'
import type { SecurityEvent } from '../../db/store.js'
import type { Tokenline } from '../context.js'

/** Logs security events as structured lines. Events never carry a token, password, secret or cookie. */
export function logEvents (tl: Tokenline, log: FastifyBaseLogger, events: SecurityEvent[]): void {
  tl.onEvents?.(events)
  if (!tl.opts.logEvents) return
  for (const e of events) {
    log.info({ event: e.type, user: e.userId, session: e.sessionId, client: e.clientId, ip: e.ip, ua: e.userAgent, reason: e.reason, detail: e.detail }, `security event ${e.type}`)
  }
}
