import { isIP } from 'node:net'
import { isPostgresUrl } from '../../db/open.js'
import { describeUrl } from '../../db/postgres/database.js'

/** What the banner reports that the settings alone do not say: learnt while starting. */
export interface StartFacts {
  /** The port actually bound (differs from the setting with PORT=0). */
  port: number
  /** The SQLite file did not exist before this start (always false for PostgreSQL: not known here). */
  created: boolean
  kid: string
  alg: string
  /** Whether the demo SPA (public/) is served. */
  demo: boolean
}

export interface BannerSettings {
  host: string
  issuer: string
  database: string
}

const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost', '::1'])
const ANY_HOSTS = new Set(['0.0.0.0', '::'])

/** A URL a browser on this machine can open for `host:port`. */
export function listenUrl (host: string, port: number): string {
  if (LOCAL_HOSTS.has(host) || ANY_HOSTS.has(host)) return `http://localhost:${port}`
  return `http://${isIP(host) === 6 ? `[${host}]` : host}:${port}`
}

/**
 * The lines printed for a human when stdout is a terminal: where to open the server, which database,
 * which signing key, where the demo is. A pure function of the settings and the facts of this start, so
 * it is tested without a terminal. Never a credential: a PostgreSQL URL shows as host:port/database.
 */
export function banner (settings: BannerSettings, facts: StartFacts): string {
  const where = listenUrl(settings.host, facts.port)
  const bound = ANY_HOSTS.has(settings.host) ? ' (every interface)' : ''
  const database = isPostgresUrl(settings.database)
    ? `PostgreSQL ${describeUrl(settings.database)}`
    : `${settings.database}${facts.created ? ' (created now)' : ''}`
  const lines = [
    `Tokenline listening on ${where}${bound}`,
    `  database     ${database}`,
    `  signing key  ${facts.kid} (${facts.alg})`,
    `  issuer       ${settings.issuer}`
  ]
  // The demo's `web` client accepts only the issuer's origin: that is the address to open.
  if (facts.demo) lines.push(`  demo         ${new URL(settings.issuer).origin}/`)
  lines.push('Logs follow as JSON lines; a line per request only with TOKENLINE_LOG_LEVEL=debug.')
  return lines.join('\n') + '\n'
}
