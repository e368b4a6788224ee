/**
 * Every Tokenline setting, in one table: its plugin option name, its environment variable, its default,
 * what it accepts and what it means. The plugin validates its options against this table at register
 * time, the standalone server and the CLI read their environment through it, and the README's options
 * table is checked against it by a test.
 */

import { isIP } from 'node:net'

export type Algorithm = 'ES256' | 'EdDSA' | 'RS256'
export type Policy = 'ignore' | 'log' | 'reject' | 'revoke'
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

export interface Argon2Params {
  /** KiB. @default 19456 (OWASP minimum for argon2id with t=2) */
  memoryCost: number
  /** Passes. @default 2 */
  timeCost: number
  /** Lanes. @default 1 */
  parallelism: number
}

/** Options of `app.register(tokenline, options)`. Durations are in seconds. */
export interface TokenlineOptions {
  /** SQLite database file. @default './data/tokenline.db' */
  database?: string
  /** `iss` of access tokens and the base of the metadata URLs. @default 'http://localhost:3000' */
  issuer?: string
  /** `aud` of access tokens. @default the issuer */
  audience?: string
  /** Access token lifetime, s. @default 900 */
  accessTokenTtl?: number
  /** Session idle timeout, s. @default 604800 (7 days) */
  idleTtl?: number
  /** Session absolute lifetime, s; rotation never extends it. @default 2592000 (30 days) */
  sessionTtl?: number
  /** Grace for a racing reuse of the immediate parent, s; 0 disables. @default 10 */
  reuseGrace?: number
  /** Access token signing algorithm for newly generated keys. @default 'ES256' */
  algorithm?: Algorithm
  /** Fingerprint binding preset. @default 'default' */
  binding?: 'default' | 'strict'
  /** Policy for a changed user agent. @default 'revoke' */
  bindingUserAgent?: Policy
  /** Policy for an IP outside the bound /24 (IPv4) or /64 (IPv6). @default 'log' ('reject' when strict) */
  bindingIp?: Policy
  /** Policy for a changed or missing device id. @default 'revoke' */
  bindingDeviceId?: Policy
  /** Whether cookie requests with `Sec-Fetch-Site: same-site` (sibling subdomains) pass the CSRF check. @default 'refuse' */
  csrfSameSite?: 'refuse' | 'allow'
  /** Largest request body accepted on Tokenline's routes, bytes. @default 16384 */
  bodyLimit?: number
  /** argon2id parameters for new password hashes. */
  argon2?: Partial<Argon2Params>
  /** The clock, in ms since the epoch. Tests inject one; never a setting. @default Date.now */
  now?: () => number
  /** Print a structured line per security event. @default true */
  logEvents?: boolean
  /** Seconds between janitor passes (expired sessions, old events); 0 disables the janitor. @default 3600 */
  janitorInterval?: number
  /** Security events older than this are pruned, s; 0 keeps them forever. @default 7776000 (90 days) */
  eventRetention?: number
  /** Bearer token `GET /metrics` requires; empty leaves it open (bind it to a private address). @default '' */
  metricsToken?: string
  /** Password grants per client IP (IPv6: per /64) per `throttlePasswordWindow`; 0 disables. @default 20 */
  throttlePassword?: number
  /** Window of `throttlePassword`, s. @default 60 */
  throttlePasswordWindow?: number
  /** Failed requests (other than password grants) per client IP per `throttleFailuresWindow`; 0 disables. @default 60 */
  throttleFailures?: number
  /** Window of `throttleFailures`, s. @default 60 */
  throttleFailuresWindow?: number
  /** Consecutive password failures of one account (from one source) before back-off starts; 0 disables. @default 5 */
  lockoutThreshold?: number
  /** Longest back-off of one account, s; it doubles from 1 s per further failure up to this. @default 900 */
  lockoutMax?: number
  /** argon2 operations running at once; 0 means one per CPU. @default 0 */
  argon2Concurrency?: number
  /** Longest a password grant waits for an argon2 slot before a 503, s; 0 never waits. @default 1 */
  argon2QueueWait?: number
}

export interface ResolvedOptions {
  database: string
  issuer: string
  audience: string
  accessTokenTtl: number
  idleTtl: number
  sessionTtl: number
  reuseGrace: number
  algorithm: Algorithm
  binding: 'default' | 'strict'
  bindingUserAgent: Policy
  bindingIp: Policy
  bindingDeviceId: Policy
  csrfSameSite: 'refuse' | 'allow'
  bodyLimit: number
  argon2: Argon2Params
  now: () => number
  logEvents: boolean
  janitorInterval: number
  eventRetention: number
  metricsToken: string
  throttlePassword: number
  throttlePasswordWindow: number
  throttleFailures: number
  throttleFailuresWindow: number
  lockoutThreshold: number
  lockoutMax: number
  argon2Concurrency: number
  argon2QueueWait: number
}

/** Settings of the standalone server only (not plugin options). */
export interface ServerSettings {
  port: number
  host: string
  trustProxy: boolean | number | string
  logLevel: LogLevel
}

export class ConfigError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ConfigError'
  }
}

type Kind =
  | { type: 'int', min: number, max: number, unit?: string }
  | { type: 'string', maxLength?: number, minLength?: number }
  | { type: 'url' }
  | { type: 'host' }
  | { type: 'enum', values: readonly string[] }
  | { type: 'trustProxy' }

export interface Setting {
  /** Plugin option / settings key. */
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

const POLICIES = ['ignore', 'log', 'reject', 'revoke'] as const
const DAY = 86400

export const SETTINGS: readonly Setting[] = [
  { key: 'port', env: 'PORT', scope: 'server', kind: { type: 'int', min: 0, max: 65535 }, default: 3000, doc: 'TCP port of the standalone server' },
  { key: 'host', env: 'HOST', scope: 'server', kind: { type: 'host' }, default: '127.0.0.1', doc: 'address the standalone server listens on (`0.0.0.0` or `::` for every interface)' },
  { key: 'database', env: 'TOKENLINE_DB', scope: 'plugin', kind: { type: 'string', maxLength: 4096 }, default: './data/tokenline.db', doc: 'SQLite database file, created with its directory on first start' },
  { key: 'issuer', env: 'TOKENLINE_ISSUER', scope: 'plugin', kind: { type: 'url' }, default: 'http://localhost:3000', doc: '`iss` of access tokens and base URL of the metadata; set it to the public https URL in production' },
  { key: 'audience', env: 'TOKENLINE_AUDIENCE', scope: 'plugin', kind: { type: 'string', maxLength: 2048 }, default: '', doc: '`aud` of access tokens (empty: the issuer)' },
  { key: 'accessTokenTtl', env: 'TOKENLINE_ACCESS_TTL', scope: 'plugin', kind: { type: 'int', min: 1, max: DAY, unit: 's' }, default: 900, doc: 'access token lifetime' },
  { key: 'idleTtl', env: 'TOKENLINE_IDLE_TTL', scope: 'plugin', kind: { type: 'int', min: 1, max: 400 * DAY, unit: 's' }, default: 7 * DAY, doc: 'a session unused this long expires' },
  { key: 'sessionTtl', env: 'TOKENLINE_SESSION_TTL', scope: 'plugin', kind: { type: 'int', min: 1, max: 400 * DAY, unit: 's' }, default: 30 * DAY, doc: 'absolute session lifetime; rotation never extends it' },
  { key: 'reuseGrace', env: 'TOKENLINE_REUSE_GRACE', scope: 'plugin', kind: { type: 'int', min: 0, max: 60, unit: 's' }, default: 10, doc: 'grace for a racing reuse of the immediate parent token (0 disables)' },
  { key: 'trustProxy', env: 'TOKENLINE_TRUST_PROXY', scope: 'server', kind: { type: 'trustProxy' }, default: 'off', doc: 'whose `X-Forwarded-For` is believed: `off` (nobody: the socket address is the client); `on` (a proxy on this host, same as `loopback`); comma-separated proxy addresses/CIDRs; or a hop count (only if nothing can reach the server except through the proxies)' },
  { key: 'logLevel', env: 'TOKENLINE_LOG_LEVEL', scope: 'server', kind: { type: 'enum', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] }, default: 'info', doc: 'log level of the standalone server' },
  { key: 'algorithm', env: 'TOKENLINE_ALG', scope: 'plugin', kind: { type: 'enum', values: ['ES256', 'EdDSA', 'RS256'] }, default: 'ES256', doc: 'signing algorithm of newly generated keys' },
  { key: 'binding', env: 'TOKENLINE_BINDING', scope: 'plugin', kind: { type: 'enum', values: ['default', 'strict'] }, default: 'default', doc: 'fingerprint preset; `strict` also rejects refreshes from outside the bound IP prefix' },
  { key: 'bindingUserAgent', env: 'TOKENLINE_BINDING_UA', scope: 'plugin', kind: { type: 'enum', values: POLICIES }, default: 'revoke', doc: 'policy when the normalised user agent changes' },
  { key: 'bindingIp', env: 'TOKENLINE_BINDING_IP', scope: 'plugin', kind: { type: 'enum', values: POLICIES }, default: 'log', doc: 'policy when the IP leaves the bound /24 (IPv4) or /64 (IPv6); `reject` under `strict`' },
  { key: 'bindingDeviceId', env: 'TOKENLINE_BINDING_DEVICE', scope: 'plugin', kind: { type: 'enum', values: POLICIES }, default: 'revoke', doc: 'policy when the device id changes or goes missing' },
  { key: 'csrfSameSite', env: 'TOKENLINE_CSRF_SAME_SITE', scope: 'plugin', kind: { type: 'enum', values: ['refuse', 'allow'] }, default: 'refuse', doc: 'whether cookie requests from sibling subdomains (`Sec-Fetch-Site: same-site`) pass the CSRF check' },
  { key: 'bodyLimit', env: 'TOKENLINE_BODY_LIMIT', scope: 'plugin', kind: { type: 'int', min: 1024, max: 1048576, unit: 'bytes' }, default: 16384, doc: 'largest request body on Tokenline routes' },
  { key: 'janitorInterval', env: 'TOKENLINE_JANITOR_INTERVAL', scope: 'plugin', kind: { type: 'int', min: 0, max: 7 * DAY, unit: 's' }, default: 3600, doc: 'seconds between janitor passes that delete sessions past their absolute expiry (with their lineage) and old security events; 0 disables (use `tokenline prune`)' },
  { key: 'eventRetention', env: 'TOKENLINE_EVENT_RETENTION', scope: 'plugin', kind: { type: 'int', min: 0, max: 3650 * DAY, unit: 's' }, default: 90 * DAY, doc: 'security events older than this are pruned by the janitor; 0 keeps them forever' },
  { key: 'metricsToken', env: 'TOKENLINE_METRICS_TOKEN', scope: 'plugin', kind: { type: 'string', maxLength: 4096, minLength: 16 }, default: '', secret: true, doc: 'bearer token `GET /metrics` requires (`Authorization: Bearer <token>`); empty: no token' },
  { key: 'argon2.memoryCost', env: 'TOKENLINE_ARGON2_MEMORY', scope: 'plugin', kind: { type: 'int', min: 1024, max: 4194304, unit: 'KiB' }, default: 19456, doc: 'argon2id memory for new hashes' },
  { key: 'argon2.timeCost', env: 'TOKENLINE_ARGON2_TIME', scope: 'plugin', kind: { type: 'int', min: 1, max: 100 }, default: 2, doc: 'argon2id passes for new hashes' },
  { key: 'argon2.parallelism', env: 'TOKENLINE_ARGON2_PARALLELISM', scope: 'plugin', kind: { type: 'int', min: 1, max: 16 }, default: 1, doc: 'argon2id lanes for new hashes' },
  { key: 'throttlePassword', env: 'TOKENLINE_THROTTLE_PASSWORD', scope: 'plugin', kind: { type: 'int', min: 0, max: 1000000 }, default: 20, doc: 'password grants per client IP (IPv6: per /64) per window, successful or not; beyond it 429 with `Retry-After`; 0 disables' },
  { key: 'throttlePasswordWindow', env: 'TOKENLINE_THROTTLE_PASSWORD_WINDOW', scope: 'plugin', kind: { type: 'int', min: 1, max: DAY, unit: 's' }, default: 60, doc: 'window of `throttlePassword`' },
  { key: 'throttleFailures', env: 'TOKENLINE_THROTTLE_FAILURES', scope: 'plugin', kind: { type: 'int', min: 0, max: 1000000 }, default: 60, doc: 'failed token-endpoint requests (other than password grants) per client IP per window; beyond it every request from that IP gets 429 until the window ends; successes never count; 0 disables' },
  { key: 'throttleFailuresWindow', env: 'TOKENLINE_THROTTLE_FAILURES_WINDOW', scope: 'plugin', kind: { type: 'int', min: 1, max: DAY, unit: 's' }, default: 60, doc: 'window of `throttleFailures`' },
  { key: 'lockoutThreshold', env: 'TOKENLINE_LOCKOUT_THRESHOLD', scope: 'plugin', kind: { type: 'int', min: 0, max: 1000 }, default: 5, doc: 'consecutive password failures of one account before back-off (1 s, doubling per further failure); answered exactly like a wrong password; 0 disables' },
  { key: 'lockoutMax', env: 'TOKENLINE_LOCKOUT_MAX', scope: 'plugin', kind: { type: 'int', min: 1, max: DAY, unit: 's' }, default: 900, doc: 'longest back-off of one account' },
  { key: 'argon2Concurrency', env: 'TOKENLINE_ARGON2_CONCURRENCY', scope: 'plugin', kind: { type: 'int', min: 0, max: 256 }, default: 0, doc: 'argon2 operations running at once (0: one per CPU); twice as many may queue' },
  { key: 'argon2QueueWait', env: 'TOKENLINE_ARGON2_QUEUE_WAIT', scope: 'plugin', kind: { type: 'int', min: 0, max: 30, unit: 's' }, default: 1, doc: 'longest a password grant waits for an argon2 slot; beyond it, or with the queue full, 503 with `Retry-After`' }
]

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

/** Validates plugin options and fills in defaults. Throws a ConfigError that names the option. */
export function resolveOptions (raw: TokenlineOptions = {}): ResolvedOptions {
  if (raw === null || typeof raw !== 'object') throw new ConfigError('tokenline options must be an object')
  const known = new Set([...SETTINGS.filter((s) => s.scope === 'plugin').map((s) => s.key.split('.')[0]), 'now', 'logEvents'])
  for (const k of Object.keys(raw)) {
    if (!known.has(k)) throw new ConfigError(`unknown tokenline option ${JSON.stringify(k)}`)
  }
  // Grouped options (argon2.*): the group is an object, and each member is a known setting.
  for (const group of new Set(SETTINGS.filter((s) => s.key.includes('.')).map((s) => s.key.split('.')[0] as string))) {
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
    const value = given === undefined ? s.default : coerce(s, given, 'option')
    const [head, tail] = s.key.split('.') as [string, string | undefined]
    if (tail === undefined) out[head] = value
    else out[head] = { ...(out[head] as object | undefined), [tail]: value }
  }
  if (raw.now !== undefined && typeof raw.now !== 'function') throw new ConfigError('option now must be a function returning ms since the epoch')
  if (raw.logEvents !== undefined && typeof raw.logEvents !== 'boolean') throw new ConfigError('option logEvents must be a boolean')
  const o = out as unknown as ResolvedOptions
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
    const value = rawValue === undefined ? (s.kind.type === 'trustProxy' ? false : s.default) : coerce(s, rawValue, 'env')
    if (s.scope === 'server') { server[s.key] = value; continue }
    if (rawValue === undefined) continue
    const [head, tail] = s.key.split('.') as [string, string | undefined]
    if (tail === undefined) options[head] = value
    else options[head] = { ...(options[head] as object | undefined), [tail]: value }
  }
  return { options: options as TokenlineOptions, server: server as unknown as ServerSettings }
}

export { setting as settingByKey }

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
