/**
 * Every Tokenline setting, declared once in TABLE below: its plugin option name, environment variable,
 * kind (type, range or allowed values, unit), default and meaning. Everything else derives from it: the
 * option types (TokenlineOptions, ResolvedOptions, ServerSettings), the checks the plugin runs at register
 * time, the environment the standalone server and the CLI read, the start-up warning about a misspelt
 * variable, and the README's options table (test/config.test.ts fails when that table is stale). Adding a
 * setting is one entry in TABLE; test/config.test.ts derives its cases from the entry's kind.
 */

import { isIP } from 'node:net'

type Kind =
  | { type: 'int', min: number, max: number, unit?: string }
  | { type: 'string', maxLength?: number, minLength?: number }
  | { type: 'url' }
  | { type: 'host' }
  | { type: 'enum', values: readonly string[] }
  | { type: 'trustProxy' }

/** One row of TABLE; its key is the plugin option name (the member name, for a grouped option). */
interface Declaration {
  env: string
  /** Where the setting applies: the plugin (and so also the server), or the standalone server only. */
  scope: 'plugin' | 'server'
  kind: Kind
  /** As written in the README and the environment; trustProxy's `off` becomes `false` when read. */
  default: string | number
  /** The "meaning" column of the README's options table. */
  doc: string
  /** A credential: error messages never echo its value. */
  secret?: boolean
  /** Member of a plugin option object (argon2: { memoryCost }) rather than an option of its own. */
  group?: keyof typeof GROUPS
}

const POLICIES = ['ignore', 'log', 'reject', 'revoke'] as const
const DAY = 86400

/** Plugin options that are objects of settings. The doc comment is what an editor shows for the option. */
const GROUPS = {
  /** argon2id parameters for new password hashes (RFC 9106 §4). Each member has its own setting. */
  argon2: true
} as const

/*
 * The doc comment of each row is what an editor shows for the plugin option, so it gives the unit and the
 * default (test/config.test.ts checks that the `@default` there is the row's default).
 */
const TABLE = {
  /** TCP port of the standalone server. @default 3000 */
  port: { env: 'PORT', scope: 'server', kind: { type: 'int', min: 0, max: 65535 }, default: 3000, doc: 'TCP port of the standalone server' },
  /** Address the standalone server listens on. @default '127.0.0.1' */
  host: { env: 'HOST', scope: 'server', kind: { type: 'host' }, default: '127.0.0.1', doc: 'address the standalone server listens on (`0.0.0.0` or `::` for every interface)' },
  /** SQLite database file (created with its directory on first start) or a postgres:// URL. @default './data/tokenline.db' */
  database: { env: 'TOKENLINE_DB', scope: 'plugin', kind: { type: 'string', maxLength: 4096 }, default: './data/tokenline.db', doc: 'SQLite database file, created with its directory on first start; or a `postgres://` / `postgresql://` URL (PostgreSQL, for several instances)', secret: true },
  /** PostgreSQL only: connections each instance keeps at most. @default 10 */
  pgPoolSize: { env: 'TOKENLINE_PG_POOL_SIZE', scope: 'plugin', kind: { type: 'int', min: 1, max: 1000 }, default: 10, doc: 'PostgreSQL only: connections each instance keeps open at most' },
  /** PostgreSQL only: a query running longer is cancelled (and the request answered 503), s. @default 5 */
  pgStatementTimeout: { env: 'TOKENLINE_PG_STATEMENT_TIMEOUT', scope: 'plugin', kind: { type: 'int', min: 1, max: 600, unit: 's' }, default: 5, doc: 'PostgreSQL only: a statement (or a wait for a connection) taking longer is abandoned and the request answered 503 with `Retry-After`' },
  /** `iss` of access tokens and the base of the metadata URLs (standalone server: `http://localhost:$PORT`). @default 'http://localhost:3000' */
  issuer: { env: 'TOKENLINE_ISSUER', scope: 'plugin', kind: { type: 'url' }, default: 'http://localhost:3000', doc: '`iss` of access tokens and base URL of the metadata; the standalone server defaults to `http://localhost:$PORT`; set it to the public https URL in production' },
  /** `aud` of access tokens. @default '' (the issuer) */
  audience: { env: 'TOKENLINE_AUDIENCE', scope: 'plugin', kind: { type: 'string', maxLength: 2048 }, default: '', doc: '`aud` of access tokens (empty: the issuer)' },
  /** Access token lifetime, s. @default 900 */
  accessTokenTtl: { env: 'TOKENLINE_ACCESS_TTL', scope: 'plugin', kind: { type: 'int', min: 1, max: DAY, unit: 's' }, default: 900, doc: 'access token lifetime' },
  /** Session idle timeout, s. @default 604800 (7 days) */
  idleTtl: { env: 'TOKENLINE_IDLE_TTL', scope: 'plugin', kind: { type: 'int', min: 1, max: 400 * DAY, unit: 's' }, default: 7 * DAY, doc: 'a session unused this long expires' },
  /** Session absolute lifetime, s; rotation never extends it. @default 2592000 (30 days) */
  sessionTtl: { env: 'TOKENLINE_SESSION_TTL', scope: 'plugin', kind: { type: 'int', min: 1, max: 400 * DAY, unit: 's' }, default: 30 * DAY, doc: 'absolute session lifetime; rotation never extends it' },
  /** Grace for a racing reuse of the immediate parent, s; 0 disables. @default 10 */
  reuseGrace: { env: 'TOKENLINE_REUSE_GRACE', scope: 'plugin', kind: { type: 'int', min: 0, max: 60, unit: 's' }, default: 10, doc: 'grace for a racing reuse of the immediate parent token (0 disables)' },
  /** Whose `X-Forwarded-For` the standalone server believes. @default 'off' */
  trustProxy: { env: 'TOKENLINE_TRUST_PROXY', scope: 'server', kind: { type: 'trustProxy' }, default: 'off', doc: 'whose `X-Forwarded-For` is believed: `off` (nobody: the socket address is the client); `on` (a proxy on this host, same as `loopback`); comma-separated proxy addresses/CIDRs; or a hop count (only if nothing can reach the server except through the proxies)' },
  /** Log level of the standalone server. @default 'info' */
  logLevel: { env: 'TOKENLINE_LOG_LEVEL', scope: 'server', kind: { type: 'enum', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] }, default: 'info', doc: 'log level of the standalone server' },
  /** Access token signing algorithm for newly generated keys. @default 'ES256' */
  algorithm: { env: 'TOKENLINE_ALG', scope: 'plugin', kind: { type: 'enum', values: ['ES256', 'EdDSA', 'RS256'] }, default: 'ES256', doc: 'signing algorithm of newly generated keys' },
  /** Fingerprint binding preset; `strict` rejects refreshes from outside the bound IP prefix. @default 'default' */
  binding: { env: 'TOKENLINE_BINDING', scope: 'plugin', kind: { type: 'enum', values: ['default', 'strict'] }, default: 'default', doc: 'fingerprint preset; `strict` also rejects refreshes from outside the bound IP prefix' },
  /** Policy for a changed user agent. @default 'revoke' */
  bindingUserAgent: { env: 'TOKENLINE_BINDING_UA', scope: 'plugin', kind: { type: 'enum', values: POLICIES }, default: 'revoke', doc: 'policy when the normalised user agent changes' },
  /** Policy for an IP outside the bound /24 (IPv4) or /64 (IPv6). @default 'log' ('reject' when strict) */
  bindingIp: { env: 'TOKENLINE_BINDING_IP', scope: 'plugin', kind: { type: 'enum', values: POLICIES }, default: 'log', doc: 'policy when the IP leaves the bound /24 (IPv4) or /64 (IPv6); `reject` under `strict`' },
  /** Policy for a changed or missing device id. @default 'revoke' */
  bindingDeviceId: { env: 'TOKENLINE_BINDING_DEVICE', scope: 'plugin', kind: { type: 'enum', values: POLICIES }, default: 'revoke', doc: 'policy when the device id changes or goes missing' },
  /** Whether cookie requests with `Sec-Fetch-Site: same-site` (sibling subdomains) pass the CSRF check. @default 'refuse' */
  csrfSameSite: { env: 'TOKENLINE_CSRF_SAME_SITE', scope: 'plugin', kind: { type: 'enum', values: ['refuse', 'allow'] }, default: 'refuse', doc: 'whether cookie requests from sibling subdomains (`Sec-Fetch-Site: same-site`) pass the CSRF check' },
  /** Largest request body accepted on Tokenline's routes, bytes. @default 16384 */
  bodyLimit: { env: 'TOKENLINE_BODY_LIMIT', scope: 'plugin', kind: { type: 'int', min: 1024, max: 1048576, unit: 'bytes' }, default: 16384, doc: 'largest request body on Tokenline routes' },
  /** Seconds between janitor passes (expired sessions, old events); 0 disables the janitor. @default 3600 */
  janitorInterval: { env: 'TOKENLINE_JANITOR_INTERVAL', scope: 'plugin', kind: { type: 'int', min: 0, max: 7 * DAY, unit: 's' }, default: 3600, doc: 'seconds between janitor passes that delete sessions past their absolute expiry (with their lineage) and old security events; 0 disables (use `tokenline prune`)' },
  /** Security events older than this are pruned, s; 0 keeps them forever. @default 7776000 (90 days) */
  eventRetention: { env: 'TOKENLINE_EVENT_RETENTION', scope: 'plugin', kind: { type: 'int', min: 0, max: 3650 * DAY, unit: 's' }, default: 90 * DAY, doc: 'security events older than this are pruned by the janitor; 0 keeps them forever' },
  /** Bearer token `GET /metrics` requires; empty leaves it open (bind it to a private address). @default '' */
  metricsToken: { env: 'TOKENLINE_METRICS_TOKEN', scope: 'plugin', kind: { type: 'string', maxLength: 4096, minLength: 16 }, default: '', secret: true, doc: 'bearer token `GET /metrics` requires (`Authorization: Bearer <token>`); empty: no token' },
  /** argon2id memory, KiB. @default 19456 (OWASP minimum for argon2id with t=2) */
  memoryCost: { group: 'argon2', env: 'TOKENLINE_ARGON2_MEMORY', scope: 'plugin', kind: { type: 'int', min: 1024, max: 4194304, unit: 'KiB' }, default: 19456, doc: 'argon2id memory for new hashes' },
  /** argon2id passes. @default 2 */
  timeCost: { group: 'argon2', env: 'TOKENLINE_ARGON2_TIME', scope: 'plugin', kind: { type: 'int', min: 1, max: 100 }, default: 2, doc: 'argon2id passes for new hashes' },
  /** argon2id lanes. @default 1 */
  parallelism: { group: 'argon2', env: 'TOKENLINE_ARGON2_PARALLELISM', scope: 'plugin', kind: { type: 'int', min: 1, max: 16 }, default: 1, doc: 'argon2id lanes for new hashes' },
  /** Password grants per client IP (IPv6: per /64) per `throttlePasswordWindow`; 0 disables. @default 20 */
  throttlePassword: { env: 'TOKENLINE_THROTTLE_PASSWORD', scope: 'plugin', kind: { type: 'int', min: 0, max: 1000000 }, default: 20, doc: 'password grants per client IP (IPv6: per /64) per window, successful or not; beyond it 429 with `Retry-After`; 0 disables' },
  /** Window of `throttlePassword`, s. @default 60 */
  throttlePasswordWindow: { env: 'TOKENLINE_THROTTLE_PASSWORD_WINDOW', scope: 'plugin', kind: { type: 'int', min: 1, max: DAY, unit: 's' }, default: 60, doc: 'window of `throttlePassword`' },
  /** Failed requests (other than password grants) per client IP per `throttleFailuresWindow`; 0 disables. @default 60 */
  throttleFailures: { env: 'TOKENLINE_THROTTLE_FAILURES', scope: 'plugin', kind: { type: 'int', min: 0, max: 1000000 }, default: 60, doc: 'failed token-endpoint requests (other than password grants) per client IP per window; beyond it every request from that IP gets 429 until the window ends; successes never count; 0 disables' },
  /** Window of `throttleFailures`, s. @default 60 */
  throttleFailuresWindow: { env: 'TOKENLINE_THROTTLE_FAILURES_WINDOW', scope: 'plugin', kind: { type: 'int', min: 1, max: DAY, unit: 's' }, default: 60, doc: 'window of `throttleFailures`' },
  /** Consecutive password failures of one account (from one source) before back-off starts; 0 disables. @default 5 */
  lockoutThreshold: { env: 'TOKENLINE_LOCKOUT_THRESHOLD', scope: 'plugin', kind: { type: 'int', min: 0, max: 1000 }, default: 5, doc: 'consecutive password failures of one account before back-off (1 s, doubling per further failure); answered exactly like a wrong password; 0 disables' },
  /** Longest back-off of one account, s; it doubles from 1 s per further failure up to this. @default 900 */
  lockoutMax: { env: 'TOKENLINE_LOCKOUT_MAX', scope: 'plugin', kind: { type: 'int', min: 1, max: DAY, unit: 's' }, default: 900, doc: 'longest back-off of one account' },
  /** argon2 operations running at once; 0 means one per CPU. @default 0 */
  argon2Concurrency: { env: 'TOKENLINE_ARGON2_CONCURRENCY', scope: 'plugin', kind: { type: 'int', min: 0, max: 256 }, default: 0, doc: 'argon2 operations running at once (0: one per CPU); twice as many may queue' },
  /** Longest a password grant waits for an argon2 slot before a 503, s; 0 never waits. @default 1 */
  argon2QueueWait: { env: 'TOKENLINE_ARGON2_QUEUE_WAIT', scope: 'plugin', kind: { type: 'int', min: 0, max: 30, unit: 's' }, default: 1, doc: 'longest a password grant waits for an argon2 slot; beyond it, or with the queue full, 503 with `Retry-After`' }
} as const satisfies Record<string, Declaration>

type Table = typeof TABLE

/** The type a row's value has once read: its kind decides. */
type ValueOf<D> =
  D extends { kind: { type: 'int' } } ? number
    : D extends { kind: { type: 'enum', values: ReadonlyArray<infer V> } } ? V
      : D extends { kind: { type: 'trustProxy' } } ? boolean | number | string
        : string

type InGroup<G> = [G] extends [never] ? { group?: never } : { group: G }

/**
 * The rows of one scope and group (`never`: the ungrouped ones), as optional fields. The `as` clause only
 * filters keys, so each field keeps its row as its declaration: editors show the row's doc comment.
 */
type SettingFields<Scope, G> = {
  -readonly [K in keyof Table as Table[K] extends { scope: Scope } & InGroup<G> ? K : never]?: ValueOf<Table[K]>
}

type GroupFields = { -readonly [G in keyof typeof GROUPS]?: SettingFields<'plugin', G> }

export type Algorithm = ValueOf<Table['algorithm']>
export type Policy = typeof POLICIES[number]
export type LogLevel = ValueOf<Table['logLevel']>

/**
 * Options of `app.register(tokenline, options)`: every plugin setting of the table (durations in seconds),
 * and what only code can pass.
 */
export interface TokenlineOptions extends SettingFields<'plugin', never>, GroupFields {
  /** The clock, in ms since the epoch. Tests inject one; never a setting. @default Date.now */
  now?: () => number
  /** Print a structured line per security event. @default true */
  logEvents?: boolean
}

/** The options not in the table: code passes them, the environment never does. */
const CODE_OPTIONS = ['now', 'logEvents'] as const satisfies ReadonlyArray<keyof TokenlineOptions>

/** Options after resolveOptions: every field present, defaults and cross-field rules applied. */
export type ResolvedOptions =
  Required<SettingFields<'plugin', never>>
  & { -readonly [G in keyof typeof GROUPS]-?: Required<SettingFields<'plugin', G>> }
  & Required<Pick<TokenlineOptions, typeof CODE_OPTIONS[number]>>

export type Argon2Params = ResolvedOptions['argon2']

/** Settings of the standalone server only (not plugin options). */
export type ServerSettings = Required<SettingFields<'server', never>>

export class ConfigError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ConfigError'
  }
}

export interface Setting {
  /** Plugin option / settings key; `group.member` for a grouped option (argon2.memoryCost). */
  key: string
  env: string
  kind: Kind
  default: string | number
  /** Where the setting applies: the plugin (and so also the server), or the standalone server only. */
  scope: 'plugin' | 'server'
  doc: string
  /** A credential: error messages never echo its value. */
  secret?: boolean
}

/** The table as a list, in its order (the README's order). */
export const SETTINGS: readonly Setting[] = Object.entries(TABLE).map(([name, row]: [string, Declaration]): Setting => {
  const { group, ...rest } = row
  return { key: group === undefined ? name : `${group}.${name}`, ...rest }
})

/** What a setting accepts, in words: used in error messages and in the README's options table. */
export function describe (s: Setting): string {
  const kind = s.kind
  switch (kind.type) {
    case 'int': return `an integer from ${kind.min} to ${kind.max}${kind.unit !== undefined ? ` (${kind.unit})` : ''}`
    case 'string':
      if (kind.minLength !== undefined) return `empty, or a string of at least ${kind.minLength} characters`
      return s.default === '' ? 'a string' : 'a non-empty string'
    case 'url': return 'an http(s) URL without credentials, query, fragment or trailing slash'
    case 'host': return 'an IP address or a host name'
    case 'enum': return `one of ${kind.values.join(', ')}`
    case 'trustProxy': return 'off, on, a hop count, or comma-separated addresses/CIDRs'
  }
}

function fail (s: Setting, from: 'env' | 'option', got: unknown): never {
  const name = from === 'env' ? `${s.env} (${s.key})` : `option ${s.key} (${s.env})`
  const shown = s.secret === true && typeof got === 'string' ? `${got.length} characters` : JSON.stringify(got)
  throw new ConfigError(`${name} must be ${describe(s)}, got ${shown}`)
}

/** Checks and converts one value (a string from the environment, or a typed plugin option). */
export function coerce (s: Setting, value: unknown, from: 'env' | 'option'): string | number | boolean {
  const k = s.kind
  switch (k.type) {
    case 'int': {
      // Only the environment is text; a plugin option must already be a number.
      const n = from === 'env' && typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value.trim()) : value
      if (typeof n !== 'number' || !Number.isInteger(n) || n < k.min || n > k.max) fail(s, from, value)
      return n
    }
    case 'string':
      if (typeof value !== 'string' || (value === '' && s.default !== '') || value.length > (k.maxLength ?? 4096)) fail(s, from, value)
      if (value !== '' && value.length < (k.minLength ?? 1)) fail(s, from, value)
      return value
    case 'url': {
      if (typeof value !== 'string') fail(s, from, value)
      let u: URL
      try { u = new URL(value) } catch { fail(s, from, value) }
      if ((u.protocol !== 'https:' && u.protocol !== 'http:') || u.username !== '' || u.password !== '' || value.includes('?') || value.includes('#') || value.endsWith('/')) fail(s, from, value)
      return value
    }
    case 'host':
      if (typeof value !== 'string' || (isIP(value) === 0 && !HOST_NAME.test(value))) fail(s, from, value)
      return value
    case 'enum':
      if (typeof value !== 'string' || !k.values.includes(value)) fail(s, from, value)
      return value
    case 'trustProxy': {
      if (typeof value === 'boolean') return value
      if (typeof value === 'number' && Number.isInteger(value) && value >= 0) return value
      if (typeof value !== 'string') fail(s, from, value)
      const v = value.trim()
      if (v === 'off' || v === 'false' || v === '') return false
      // `on` means a reverse proxy on this host: only a loopback peer is believed, and only for the hop
      // it appended. Fastify's `true` would believe the leftmost X-Forwarded-For entry, which the client
      // writes (RFC 9700 §4.13).
      if (v === 'on' || v === 'true') return 'loopback'
      if (/^\d+$/.test(v)) return Number(v)
      const parts = v.split(',').map((p) => p.trim())
      if (parts.every(proxyAddress)) return parts.join(',')
      fail(s, from, value)
    }
  }
}

/** RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, 253 characters at most. */
const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/

const PROXY_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal'])

/** One entry of a trusted-proxy list: an IP, an IP/prefix within its family's width, or a proxy-addr name. */
function proxyAddress (p: string): boolean {
  if (PROXY_NAMES.has(p)) return true
  const [ip = '', bits, extra] = p.split('/')
  const family = isIP(ip)
  if (family === 0 || extra !== undefined) return false
  if (bits === undefined) return true
  return /^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128)
}

function setting (key: string): Setting {
  const s = SETTINGS.find((x) => x.key === key)
  /* c8 ignore next -- a programming error, caught by any test */
  if (s === undefined) throw new Error(`unknown setting ${key}`)
  return s
}

const get = (obj: Record<string, unknown>, path: string): unknown =>
  path.split('.').reduce<unknown>((o, p) => (o !== null && typeof o === 'object' ? (o as Record<string, unknown>)[p] : undefined), obj)

/** Sets `value` at a setting's key in `into`: a grouped key (argon2.memoryCost) fills its group's object. */
function put (into: Record<string, unknown>, key: string, value: unknown): void {
  const [head, tail] = key.split('.') as [string, string | undefined]
  if (tail === undefined) into[head] = value
  else into[head] = { ...(into[head] as object | undefined), [tail]: value }
}

/** Validates plugin options and fills in defaults. Throws a ConfigError that names the option. */
export function resolveOptions (raw: TokenlineOptions = {}): ResolvedOptions {
  if (raw === null || typeof raw !== 'object') throw new ConfigError('tokenline options must be an object')
  const known = new Set([...SETTINGS.filter((s) => s.scope === 'plugin').map((s) => s.key.split('.')[0]), ...CODE_OPTIONS])
  for (const k of Object.keys(raw)) {
    if (!known.has(k)) throw new ConfigError(`unknown tokenline option ${JSON.stringify(k)}`)
  }
  // Grouped options (argon2.*): the group is an object, and each member is a known setting.
  for (const group of Object.keys(GROUPS)) {
    const value = (raw as Record<string, unknown>)[group]
    if (value === undefined) continue
    const members = SETTINGS.filter((s) => s.key.startsWith(`${group}.`)).map((s) => s.key.slice(group.length + 1))
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(`option ${group} must be an object with ${members.join(', ')}`)
    for (const k of Object.keys(value)) {
      if (!members.includes(k)) throw new ConfigError(`unknown tokenline option ${JSON.stringify(`${group}.${k}`)} (${group} takes ${members.join(', ')})`)
    }
  }
  const out: Record<string, unknown> = {}
  for (const s of SETTINGS) {
    if (s.scope !== 'plugin') continue
    const given = get(raw as Record<string, unknown>, s.key)
    put(out, s.key, given === undefined ? s.default : coerce(s, given, 'option'))
  }
  if (raw.now !== undefined && typeof raw.now !== 'function') throw new ConfigError('option now must be a function returning ms since the epoch')
  if (raw.logEvents !== undefined && typeof raw.logEvents !== 'boolean') throw new ConfigError('option logEvents must be a boolean')
  // The loop gave every plugin row its checked value; the type of each is its row's (test/config.test.ts).
  const o = out as ResolvedOptions
  if (o.audience === '') o.audience = o.issuer
  if (o.idleTtl > o.sessionTtl) o.idleTtl = o.sessionTtl
  // The strict preset rejects refreshes from outside the bound IP prefix unless bindingIp is given.
  if (o.binding === 'strict' && raw.bindingIp === undefined) o.bindingIp = 'reject'
  o.now = raw.now ?? Date.now
  o.logEvents = raw.logEvents ?? true
  return o
}

/**
 * Reads the environment (PORT, HOST, TOKENLINE_*) into plugin options and server settings.
 * Throws a ConfigError naming the variable on the first bad value.
 */
export function fromEnv (env: NodeJS.ProcessEnv = process.env): { options: TokenlineOptions, server: ServerSettings } {
  const options: Record<string, unknown> = {}
  const server: Record<string, unknown> = {}
  for (const s of SETTINGS) {
    const rawValue = env[s.env]
    if (s.scope === 'server') {
      // A default is written as a user writes the variable (trustProxy's `off`): it is read the same way.
      server[s.key] = coerce(s, rawValue ?? s.default, rawValue === undefined ? 'option' : 'env')
      continue
    }
    if (rawValue !== undefined) put(options, s.key, coerce(s, rawValue, 'env'))
  }
  return { options: options as TokenlineOptions, server: server as ServerSettings }
}

/**
 * The standalone server's plugin options: those of the environment, with the issuer following PORT when
 * TOKENLINE_ISSUER is not set (`PORT=3001 npm start` issues tokens as `http://localhost:3001`, and its
 * metadata says so: RFC 8414 §3.3 wants the issuer to be the URL the metadata was fetched under). With
 * PORT=0 the port is known only once listening, after the issuer is fixed: the plugin's default stays.
 */
export function serverOptions (options: TokenlineOptions, server: Pick<ServerSettings, 'port'>): TokenlineOptions {
  if (options.issuer !== undefined || server.port === 0) return options
  return { ...options, issuer: `http://localhost:${server.port}` }
}

export { setting as settingByKey }

/**
 * TOKENLINE_ variables that are not settings and that the start-up warning leaves alone: switches of the
 * test harness, read only by test processes (test/fixtures/server-process.mjs).
 */
const NOT_SETTINGS: readonly string[] = ['TOKENLINE_TEST_DEFERRED', 'TOKENLINE_TEST_NO_CAS']

/**
 * One line per TOKENLINE_ variable in `env` that is no setting, naming the closest setting. A misspelt
 * variable is otherwise ignored without a word, and its setting silently keeps the default.
 */
export function unknownSettings (env: NodeJS.ProcessEnv): string[] {
  const names = SETTINGS.map((s) => s.env).filter((n) => n.startsWith('TOKENLINE_'))
  return Object.keys(env)
    .filter((n) => n.startsWith('TOKENLINE_') && env[n] !== undefined && !names.includes(n) && !NOT_SETTINGS.includes(n))
    .sort()
    .map((n) => {
      let closest = ''
      let best = Infinity
      for (const candidate of names) {
        const d = editDistance(n, candidate)
        if (d < best) { best = d; closest = candidate }
      }
      return `unknown setting ${n} (did you mean ${closest}?)`
    })
}

/** Levenshtein distance: the fewest single-character insertions, deletions and substitutions from a to b. */
function editDistance (a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1)
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution))
    }
    previous = current
  }
  return previous[b.length] ?? 0
}

/**
 * The README's options table, generated from SETTINGS (scripts/options-table.js writes it between the
 * `<!-- options:start -->` and `<!-- options:end -->` markers; test/config.test.ts fails when it is stale).
 */
export function optionsTable (): string {
  const cell = (text: string): string => text.replace(/\|/g, '\\|')
  const rows = SETTINGS.map((s) => [
    `\`${s.env}\``,
    s.scope === 'plugin' ? `\`${s.key}\`` : '(server only)',
    s.default === '' ? '(empty)' : `\`${s.default}\``,
    describe(s),
    s.doc
  ].map(cell))
  const header = ['environment variable', 'plugin option', 'default', 'accepts', 'meaning']
  return [header, header.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n') + '\n'
}
