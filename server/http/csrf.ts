// Hand-written because @fastify/csrf-protection needs every client to fetch a token and send it back, a change to the token request (RFC 6749 §4.3.2, §6) that curl and existing SPAs do not make; this checks provenance headers against each client's own origins, from the database.
import type { FastifyRequest } from 'fastify'
import type { Client } from '../../db/store.js'
import type { Tokenline } from '../context.js'
import { OAuthError } from '../errors.js'

/** The space-separated allowed origins of a client, as a set. */
export const originsOf = (client: Client): Set<string> => new Set(client.origins.split(' ').filter((o) => o !== ''))

/**
 * CSRF defence for every request that uses the refresh cookie, and for the password grant of cookie
 * clients (login CSRF). SameSite=Strict does not cover sibling subdomains, and a form POST is a CORS
 * "simple" request with no preflight, so the request's own provenance is checked (OWASP CSRF cheat sheet,
 * "Fetch Metadata" and "Verifying Origin"):
 *
 * - `Sec-Fetch-Site`, when present, must be `same-origin` (or `same-site` when configured);
 * - `Origin`, when present, must exactly equal one of the client's allowed origins (`null` never does);
 * - a request with neither header does not come from a browser (curl with a cookie jar) and passes.
 *
 * A refusal is a 403 that happens before the session is looked at, so it changes nothing.
 */
export function checkCsrf (tl: Tokenline, request: FastifyRequest, client: Client): void {
  const site = request.headers['sec-fetch-site']
  const origin = request.headers.origin
  if (site !== undefined) {
    const ok = site === 'same-origin' || (site === 'same-site' && tl.opts.csrfSameSite === 'allow')
    if (!ok) throw refused()
  }
  if (origin !== undefined && !originsOf(client).has(origin)) throw refused()
}

const refused = (): OAuthError =>
  new OAuthError('invalid_request', 'cross-site request refused', { status: 403, reason: 'csrf_rejected' })
