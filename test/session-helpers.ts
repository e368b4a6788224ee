/*
 * Helpers for the revocation, introspection, sessions-API and audit tests: requests to those routes,
 * the refresh cookie, and the built CLI run as a child process on a test's database.
 */
import type { LightMyRequestResponse } from 'fastify'
import { COOKIE_NAME } from '../server/tokens/response.js'
import { runCli, type Run } from './processes.js'
import { BROWSER_UA, decodeJwt, form, ORIGIN, PASSWORD, type Harness, type TokenBody } from './helpers.js'

export { COOKIE_NAME }

/** What a same-origin fetch() from the demo SPA at http://localhost:3000 sends. */
export const SAME_ORIGIN = { origin: ORIGIN, 'sec-fetch-site': 'same-origin', 'sec-fetch-mode': 'cors', 'sec-fetch-dest': 'empty', 'user-agent': BROWSER_UA }

export const sidOf = (accessToken: string): string => decodeJwt(accessToken).payload.sid as string

/** POST to a /token/* route with a form body. */
export async function post (h: Harness, url: string, params: Record<string, string>, opts: { headers?: Record<string, string>, cookies?: Record<string, string> } = {}): Promise<LightMyRequestResponse> {
  return await h.app.inject({
    method: 'POST',
    url,
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...opts.headers },
    payload: form(params),
    ...(opts.cookies !== undefined && { cookies: opts.cookies })
  })
}

export const revoke = async (h: Harness, params: Record<string, string>, opts: Parameters<typeof post>[3] = {}): Promise<LightMyRequestResponse> =>
  await post(h, '/token/revoke', params, opts)

export async function refresh (h: Harness, token: string, client = 'cli', extra: Record<string, string> = {}): Promise<{ status: number, body: TokenBody }> {
  const res = await h.token({ grant_type: 'refresh_token', client_id: client, refresh_token: token, ...extra })
  return { status: res.statusCode, body: res.json() as TokenBody }
}

/** A login of the cookie client `web` from the demo SPA; returns the access token and the cookie's token. */
export async function cookieLogin (h: Harness): Promise<{ access_token: string, cookie: string }> {
  const res = await h.token({ grant_type: 'password', client_id: 'web', username: 'alice', password: PASSWORD }, { headers: SAME_ORIGIN })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.body}`)
  const cookie = res.cookies.find((c) => c.name === COOKIE_NAME)
  if (cookie === undefined) throw new Error('no refresh cookie')
  return { access_token: (res.json() as TokenBody).access_token, cookie: cookie.value }
}

/** A refresh carrying only the cookie, as the demo SPA sends it. */
export async function cookieRefresh (h: Harness, cookie: string): Promise<LightMyRequestResponse> {
  return await h.token({ grant_type: 'refresh_token', client_id: 'web' }, { headers: SAME_ORIGIN, cookies: { [COOKIE_NAME]: cookie } })
}

/** The response's refresh `Set-Cookie` line, raw, or undefined. */
export function refreshSetCookie (res: LightMyRequestResponse): string | undefined {
  const h = res.headers['set-cookie']
  const all = h === undefined ? [] : Array.isArray(h) ? h : [h]
  return all.find((line) => line.startsWith(`${COOKIE_NAME}=`))
}

/** A request to the sessions API with a bearer token. */
export async function sessionsApi (h: Harness, method: 'GET' | 'DELETE', url: string, accessToken?: string): Promise<LightMyRequestResponse> {
  return await h.app.inject({ method, url, headers: accessToken === undefined ? {} : { authorization: `Bearer ${accessToken}` } })
}

export { ROOT, cleanEnv } from './processes.js'
export type { Run }

/** Runs the built CLI (`node bin/tokenline.js ...args`) on `dbFile`, with cheap argon2, to completion. */
export async function tokenline (dbFile: string, args: string[], input = '', env: Record<string, string> = {}): Promise<Run> {
  return await runCli(args, { env: { TOKENLINE_DB: dbFile, TOKENLINE_ARGON2_MEMORY: '1024', TOKENLINE_ARGON2_TIME: '1', ...env }, input })
}
