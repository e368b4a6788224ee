import type { FastifyRequest } from 'fastify'
import type { RequestMeta } from '../../db/store.js'
import { MAX_USER_AGENT, normaliseIp } from '../security/fingerprint.js'

/** The request's binding-relevant facts. The IP is the socket's unless the host trusts a proxy. */
export function requestMeta (request: FastifyRequest, deviceId: string | null): RequestMeta {
  const ua = request.headers['user-agent']
  return {
    ip: normaliseIp(request.ip),
    userAgent: (typeof ua === 'string' ? ua : '').slice(0, MAX_USER_AGENT),
    deviceId
  }
}
