import type { LightMyRequestResponse } from 'fastify'
import { COOKIE_NAME } from '../server/tokens/response.js'
import { ORIGIN, BROWSER_UA } from './helpers.js'

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

/** Every `Set-Cookie` of a response, parsed. */
export function setCookies (res: LightMyRequestResponse): SetCookie[] {
  const h = res.headers['set-cookie']
  if (h === undefined) return []
  return (Array.isArray(h) ? h : [h]).map(parseSetCookie)
}

/** The response's one refresh cookie, or undefined; throws if there are several. */
export function refreshCookie (res: LightMyRequestResponse): SetCookie | undefined {
  const all = setCookies(res).filter((c) => c.name === COOKIE_NAME)
  if (all.length > 1) throw new Error(`${all.length} refresh cookies in one response`)
  return all[0]
}

/** What a same-origin fetch() from the demo SPA at http://localhost:3000 sends. */
export const SAME_ORIGIN = { origin: ORIGIN, 'sec-fetch-site': 'same-origin', 'sec-fetch-mode': 'cors', 'sec-fetch-dest': 'empty', 'user-agent': BROWSER_UA }
