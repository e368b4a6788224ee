/*
 * The refresh cookie: the Set-Cookie lines of a response, read as a browser would, and the login and
 * refresh requests of a cookie client as the demo SPA's page sends them.
 */
import type { LightMyRequestResponse } from 'fastify'
import { COOKIE_NAME } from '../server/tokens/response.js'
import { PASSWORD, SAME_ORIGIN, type GrantOptions, type Harness } from './helpers.js'

export { COOKIE_NAME }

/** One parsed `Set-Cookie` line: attribute names lower-cased, flags mapped to `true`. */
export interface SetCookie {
  raw: string
  name: string
  value: string
  attrs: Map<string, string | true>
}

export function parseSetCookie (raw: string): SetCookie {
  const [pair = '', ...rest] = raw.split(';').map((s) => s.trim())
  const eq = pair.indexOf('=')
  const attrs = new Map<string, string | true>()
  for (const a of rest) {
    const i = a.indexOf('=')
    if (i === -1) attrs.set(a.toLowerCase(), true)
    else attrs.set(a.slice(0, i).toLowerCase(), a.slice(i + 1))
  }
  return { raw, name: pair.slice(0, eq), value: pair.slice(eq + 1), attrs }
}

/** Every `Set-Cookie` of a response, injected or fetched from a running server, parsed. */
export function setCookies (res: LightMyRequestResponse | Response): SetCookie[] {
  if (res instanceof Response) return res.headers.getSetCookie().map(parseSetCookie)
  const h = res.headers['set-cookie']
  if (h === undefined) return []
  return (Array.isArray(h) ? h : [h]).map(parseSetCookie)
}

/** The response's one refresh cookie, or undefined; throws if there are several. */
export function refreshCookie (res: LightMyRequestResponse | Response): SetCookie | undefined {
  const all = setCookies(res).filter((c) => c.name === COOKIE_NAME)
  if (all.length > 1) throw new Error(`${all.length} refresh cookies in one response`)
  return all[0]
}

/** The refresh token a response put in its cookie; throws if it set none. */
export function cookieValue (res: LightMyRequestResponse): string {
  const c = refreshCookie(res)
  if (c === undefined) throw new Error(`no refresh cookie (status ${res.statusCode}): ${res.body}`)
  return c.value
}

/** The cookie's Max-Age in seconds (NaN when it has none). */
export const maxAge = (c: SetCookie | undefined): number => Number(c?.attrs.get('max-age'))

/** alice's login with `client` (the cookie client `web` unless said) from the demo SPA's page; throws unless it succeeds. */
export async function cookieLogin (h: Harness, client = 'web'): Promise<LightMyRequestResponse> {
  const res = await h.token({ grant_type: 'password', client_id: client, username: 'alice', password: PASSWORD }, { headers: SAME_ORIGIN })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.body}`)
  return res
}

/**
 * A refresh presenting `cookie` as the refresh cookie and no refresh_token parameter (unless `params`
 * adds one), from the demo SPA's page unless `headers` says who else sends it.
 */
export async function cookieRefresh (h: Harness, cookie: string, opts: Pick<GrantOptions, 'client' | 'headers' | 'params'> = {}): Promise<LightMyRequestResponse> {
  return await h.token({ grant_type: 'refresh_token', client_id: opts.client ?? 'web', ...opts.params }, { headers: opts.headers ?? SAME_ORIGIN, cookies: { [COOKIE_NAME]: cookie } })
}
