/*
 * Requests to the routes around the token endpoint (revocation, introspection, the sessions API), and
 * the built CLI run as a child process on a test's database file.
 */
import type { LightMyRequestResponse } from 'fastify'
import { CHEAP_ARGON2_ENV, runCli, type Run } from './processes.js'
import { form, type Harness, type Sender } from './helpers.js'

/** POST to a route of `h` (any, /token included) with a form body. */
export async function post (h: Harness, url: string, params: Record<string, string>, from: Omit<Sender, 'ip'> = {}): Promise<LightMyRequestResponse> {
  return await h.app.inject({
    method: 'POST',
    url,
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...from.headers },
    payload: form(params),
    ...(from.cookies !== undefined && { cookies: from.cookies })
  })
}

/** POST /token/revoke (RFC 7009 §2.1). */
export const revoke = async (h: Harness, params: Record<string, string>, from: Omit<Sender, 'ip'> = {}): Promise<LightMyRequestResponse> =>
  await post(h, '/token/revoke', params, from)

/** A request to the sessions API with a bearer token. */
export async function sessionsApi (h: Harness, method: 'GET' | 'DELETE', url: string, accessToken?: string): Promise<LightMyRequestResponse> {
  return await h.app.inject({ method, url, headers: accessToken === undefined ? {} : { authorization: `Bearer ${accessToken}` } })
}

/** Runs the built CLI (`node bin/tokenline.js ...args`) on `dbFile`, with cheap argon2, to completion. */
export async function tokenline (dbFile: string, args: string[], input = '', env: Record<string, string> = {}): Promise<Run> {
  return await runCli(args, { env: { TOKENLINE_DB: dbFile, ...CHEAP_ARGON2_ENV, ...env }, input })
}
