import type { FastifyRequest } from 'fastify'
import type { RequestMeta } from '../../db/store.js'
import { MAX_USER_AGENT, normaliseIp } from '../security/fingerprint.js'

const normalised = new WeakMap<FastifyRequest, string>()

/**
 * The client address in its stored form (server/security/fingerprint.ts), worked out once per request:
 * the throttles key on it before the handler, and the grants bind and record it.
 */
export function clientIp (request: FastifyRequest): string {
  let ip = normalised.get(request)
  if (ip === undefined) {
    ip = normaliseIp(request.ip)
    normalised.set(request, ip)
  }
  return ip
}

/** The request's binding-relevant facts. The IP is the socket's unless the host trusts a proxy. */
export function requestMeta (request: FastifyRequest, deviceId: string | null): RequestMeta {
  const ua = request.headers['user-agent']
  return {
    ip: clientIp(request),
    userAgent: (typeof ua === 'string' ? ua : '').slice(0, MAX_USER_AGENT),
    deviceId
  }
}
