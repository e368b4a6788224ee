/*
 * The in-process harness every spec builds on: Tokenline on a fresh database file with seeded users and
 * clients, a test clock, and the requests a client sends to POST /token (RFC 6749 §4.3 and §6).
 */
import Fastify, { type FastifyInstance, type InjectOptions, type LightMyRequestResponse } from 'fastify'
import { decodeJwt } from 'jose'
import { join } from 'node:path'
import type { Test } from 'tap'
import { secretDigest } from '../server/http/client-auth.js'
import tokenline, { type TokenlinePluginOptions } from '../server/plugin.js'
import { createPasswords } from '../server/security/passwords.js'
import { randomId } from '../server/tokens/refresh-format.js'
import type { Client } from '../db/store.js'
import { sharedPostgres } from './postgres.js'

/** Cheap argon2 for tests; production parameters are checked by one test (password-grant.test.ts). */
export const CHEAP_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 }

export const PASSWORD = 'correct horse battery staple'
export const ORIGIN = 'http://localhost:3000'
export const BROWSER_UA = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'
/** What a same-origin fetch() from the demo SPA at http://localhost:3000 sends. */
export const SAME_ORIGIN = { origin: ORIGIN, 'sec-fetch-site': 'same-origin', 'sec-fetch-mode': 'cors', 'sec-fetch-dest': 'empty', 'user-agent': BROWSER_UA }

/** An injectable clock: tests move time instead of sleeping. Starts at a fixed instant. */
export class TestClock {
  t = Date.UTC(2026, 0, 1)
  now = (): number => this.t
  /** Moves time forward by `seconds` (fractions allowed). */
  advance (seconds: number): void { this.t += Math.round(seconds * 1000) }
}

/** Who sends a request, as the server sees it. */
export interface Sender {
  headers?: Record<string, string>
  cookies?: Record<string, string>
  /** The socket address; light-my-request's is 127.0.0.1 otherwise. */
  ip?: string
}

/** A grant request's client and extra parameters, and who sends it. */
export interface GrantOptions extends Sender {
  /** client_id, `cli` unless said. */
  client?: string
  device_id?: string
  /** Further parameters, e.g. `scope` or `client_secret`. */
  params?: Record<string, string>
}

/**
 * TOKENLINE_TEST_ENGINE=postgres runs the harness's tests on PostgreSQL (a database each, on one server
 * per test process) instead of a SQLite file: the behaviour every engine must share, checked on both.
 */
async function postgresDatabase (t: Test): Promise<string> {
  const server = await sharedPostgres()
  if (server === undefined) throw new Error('TOKENLINE_TEST_ENGINE=postgres needs PostgreSQL (see test/postgres.ts)')
  return await server.database(t)
}

export interface Harness {
  app: FastifyInstance
  clock: TestClock
  /** The database: a SQLite file in the test's directory, or a postgres:// URL (TOKENLINE_TEST_ENGINE). */
  database: string
  /** POST /token with a form body. */
  token: (params: Record<string, string>, from?: Sender) => Promise<LightMyRequestResponse>
  /** A password grant of `username` (alice unless said) with the right password unless said; the parsed body, whatever the status. */
  login: (opts?: GrantOptions & { username?: string, password?: string }) => Promise<TokenBody>
  /** A refresh_token grant presenting `refreshToken` in the body; the status, the parsed body and the response. */
  refresh: (refreshToken: string, opts?: GrantOptions) => Promise<{ status: number, body: TokenBody, res: LightMyRequestResponse }>
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
  const database = process.env.TOKENLINE_TEST_ENGINE === 'postgres' ? await postgresDatabase(t) : dbFile
  const clock = new TestClock()
  const app = Fastify()
  // Every injected request comes from 127.0.0.1, so the per-IP budgets (server/http/throttle.ts) are off
  // unless a test turns them on; test/brute-force.test.ts does, with the production defaults.
  await app.register(tokenline, { database, argon2: CHEAP_ARGON2, now: clock.now, logEvents: false, throttlePassword: 0, throttleFailures: 0, ...overrides })
  await app.ready()
  t.teardown(() => app.close())
  const store = app.tokenline.store
  const passwords = createPasswords(CHEAP_ARGON2)

  const h: Harness = {
    app,
    clock,
    database,
    ...requestsTo(app),
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

/**
 * The harness's requests, bound to any app with Tokenline registered at the root: tests that build
 * their own host (a logger, trustProxy, a restart on the same file) send what build()'s tests send.
 */
export function requestsTo (app: FastifyInstance): Pick<Harness, 'token' | 'login' | 'refresh'> {
  const token: Harness['token'] = async (params, from = {}) => {
    const req: InjectOptions = {
      method: 'POST',
      url: '/token',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...from.headers },
      payload: form(params)
    }
    if (from.cookies !== undefined) req.cookies = from.cookies
    if (from.ip !== undefined) req.remoteAddress = from.ip
    return await app.inject(req)
  }
  /** The grant's parameters: its own, then the client's, the device id and any extra ones. */
  const grant = (own: Record<string, string>, opts: GrantOptions): Record<string, string> => {
    const params: Record<string, string> = { ...own, client_id: opts.client ?? 'cli', ...opts.params }
    if (opts.device_id !== undefined) params.device_id = opts.device_id
    return params
  }
  return {
    token,
    async login (opts = {}) {
      const res = await token(grant({ grant_type: 'password', username: opts.username ?? 'alice', password: opts.password ?? PASSWORD }, opts), opts)
      return res.json() as TokenBody
    },
    async refresh (refreshToken, opts = {}) {
      const res = await token(grant({ grant_type: 'refresh_token', refresh_token: refreshToken }, opts), opts)
      return { status: res.statusCode, body: res.json() as TokenBody, res }
    }
  }
}

/** The session id (`sid` claim) of an access token, or of the access token in a token response. */
export function sidOf (token: string | { access_token: string }): string {
  return decodeJwt(typeof token === 'string' ? token : token.access_token).sid as string
}

/** An HTTP Basic client credential (RFC 7617), the id and secret sent as given. */
export const basicAuth = (id: string, secret: string): string => 'Basic ' + Buffer.from(`${id}:${secret}`).toString('base64')

/** Counts argon2 verifications from now on, so a test can show a refusal came before any hashing. */
export function countVerifies (h: Harness): { readonly n: number } {
  const passwords = h.app.tokenline.passwords as { verify: (hash: string | undefined, pw: string) => Promise<boolean> }
  const original = passwords.verify
  const counter = { n: 0 }
  passwords.verify = async (hash, pw) => { counter.n++; return await original(hash, pw) }
  return counter
}
