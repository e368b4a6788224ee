/*
 * Helpers for the revocation, introspection, sessions-API and audit tests: requests to those routes,
 * the refresh cookie, and the built CLI run as a child process on a test's database.
 */
import type { LightMyRequestResponse } from 'fastify'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { COOKIE_NAME } from '../server/issue.js'
import { BROWSER_UA, decodeJwt, form, ORIGIN, PASSWORD, type Harness, type TokenBody } from './helpers.js'

export { COOKIE_NAME }

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
export const CLI = join(ROOT, 'bin', 'tokenline.js')

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

export interface Run { code: number | null, stdout: string, stderr: string }

/** The environment without any TOKENLINE_* / PORT / HOST the developer may have set, plus `extra`. */
export function cleanEnv (extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('TOKENLINE_') && k !== 'PORT' && k !== 'HOST') env[k] = v
  }
  return { ...env, ...extra }
}

/** Runs the built CLI (`node bin/tokenline.js ...args`) on `dbFile` to completion. */
export async function tokenline (dbFile: string, args: string[], input = '', env: Record<string, string> = {}): Promise<Run> {
  if (!existsSync(join(ROOT, 'dist', 'server', 'cli', 'index.js'))) throw new Error('dist/ is missing: run npm run build first')
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: cleanEnv({ TOKENLINE_DB: dbFile, TOKENLINE_ARGON2_MEMORY: '1024', TOKENLINE_ARGON2_TIME: '1', ...env }),
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    child.stdin.on('error', () => {})
    child.stdin.end(input)
  })
}
