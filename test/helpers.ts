import Fastify, { type FastifyInstance, type InjectOptions, type LightMyRequestResponse } from 'fastify'
import { join } from 'node:path'
import type { Test } from 'tap'
import { secretDigest } from '../server/http/client-auth.js'
import tokenline, { type TokenlinePluginOptions } from '../server/plugin.js'
import { createPasswords } from '../server/security/passwords.js'
import { randomId } from '../server/tokens/refresh-format.js'
import type { Client } from '../db/store.js'

/** Cheap argon2 for tests; production parameters are checked by one test (password-grant.test.ts). */
export const CHEAP_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 }

export const PASSWORD = 'correct horse battery staple'
export const ORIGIN = 'http://localhost:3000'
export const BROWSER_UA = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'

/** An injectable clock: tests move time instead of sleeping. Starts at a fixed instant. */
export class TestClock {
  t = Date.UTC(2026, 0, 1)
  now = (): number => this.t
  /** Moves time forward by `seconds` (fractions allowed). */
  advance (seconds: number): void { this.t += Math.round(seconds * 1000) }
}

export interface Harness {
  app: FastifyInstance
  clock: TestClock
  dbFile: string
  /** POST /token with a form body. */
  token: (params: Record<string, string>, opts?: { headers?: Record<string, string>, cookies?: Record<string, string> }) => Promise<LightMyRequestResponse>
  /** Logs `username` in with `client` (default `cli`) and returns the parsed body. */
  login: (opts?: { client?: string, username?: string, password?: string, headers?: Record<string, string>, device_id?: string }) => Promise<TokenBody>
  addUser: (username: string, password?: string) => Promise<string>
  addClient: (client: Partial<Client> & { id: string, secret?: string }) => Promise<void>
}

export interface TokenBody {
  access_token: string
  token_type: string
  expires_in: number
  scope: string
  refresh_token?: string
  error?: string
  error_description?: string
  reason?: string
}

export const form = (params: Record<string, string>): string => new URLSearchParams(params).toString()

/**
 * A Fastify app with Tokenline registered on its own database file in the test's directory,
 * a test clock, cheap argon2, and seeded data: user `alice`, public body client `cli`, public
 * cookie client `web` (origin http://localhost:3000), confidential body client `svc` (secret `svc-secret`).
 */
export async function build (t: Test, overrides: Partial<TokenlinePluginOptions> = {}): Promise<Harness> {
  const dir = t.testdir({})
  const dbFile = join(dir, 'tokenline.db')
  const clock = new TestClock()
  const app = Fastify()
  // Every injected request comes from 127.0.0.1, so the per-IP budgets (server/http/throttle.ts) are off
  // unless a test turns them on; test/brute-force.test.ts does, with the production defaults.
  await app.register(tokenline, { database: dbFile, argon2: CHEAP_ARGON2, now: clock.now, logEvents: false, throttlePassword: 0, throttleFailures: 0, ...overrides })
  await app.ready()
  t.teardown(() => app.close())
  const store = app.tokenline.store
  const passwords = createPasswords(CHEAP_ARGON2)

  const h: Harness = {
    app,
    clock,
    dbFile,
    async token (params, opts = {}) {
      const req: InjectOptions = {
        method: 'POST',
        url: '/token',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...opts.headers },
        payload: form(params)
      }
      if (opts.cookies !== undefined) req.cookies = opts.cookies
      return await app.inject(req)
    },
    async login (opts = {}) {
      const params: Record<string, string> = {
        grant_type: 'password',
        client_id: opts.client ?? 'cli',
        username: opts.username ?? 'alice',
        password: opts.password ?? PASSWORD
      }
      if (opts.device_id !== undefined) params.device_id = opts.device_id
      const res = await h.token(params, { headers: opts.headers ?? {} })
      return res.json() as TokenBody
    },
    async addUser (username, password = PASSWORD) {
      const id = randomId()
      await store.createUser({ id, username, passwordHash: await passwords.hash(password), now: clock.now() })
      return id
    },
    async addClient ({ secret, ...c }) {
      await store.createClient({
        secretDigest: secret === undefined ? null : secretDigest(secret),
        delivery: 'body',
        grants: 'password refresh_token',
        scopes: '',
        origins: '',
        accessTtl: null,
        idleTtl: null,
        sessionTtl: null,
        now: clock.now(),
        ...c
      })
    }
  }
  await h.addUser('alice')
  await h.addClient({ id: 'cli', scopes: 'read write' })
  await h.addClient({ id: 'web', delivery: 'cookie', origins: ORIGIN })
  await h.addClient({ id: 'svc', secret: 'svc-secret' })
  return h
}

/** Decodes a JWT's header and payload without verifying (tests verify separately, with jose). */
export function decodeJwt (jwt: string): { header: Record<string, unknown>, payload: Record<string, unknown> } {
  const [h, p] = jwt.split('.') as [string, string]
  return { header: JSON.parse(Buffer.from(h, 'base64url').toString()), payload: JSON.parse(Buffer.from(p, 'base64url').toString()) }
}
