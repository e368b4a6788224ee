import type { RefreshTokenRecord, Session, StoredSecurityEvent, User } from '../../db/store.js'
import { sessionStatus } from '../sessions/state.js'
import { iso } from './io.js'

/*
 * `tokenline lineage <session>`: a session's token chain as a terminal sees it at a glance. Each
 * generation shows when and from where it was issued and used; the session's security events are
 * hung on the generation they concern (a grace replay or a reuse on the generation that was replayed,
 * a fingerprint mismatch on the one presented), and the revocation closes the chain.
 */

const UA_WIDTH = 60
const IP_WIDTH = 15

/** A user agent shortened for one terminal line; quoted only when empty. */
export function shortUa (ua: string | null): string {
  if (ua === null || ua === '') return '""'
  return ua.length > UA_WIDTH ? ua.slice(0, UA_WIDTH - 1) + '…' : ua
}

const where = (ip: string | null, ua: string | null): string => `${(ip ?? '-').padEnd(IP_WIDTH)}  ${shortUa(ua)}`

/** `{"a":1,"b":[2,3]}` as `a=1 b=2,3`: event details, readable in a table. */
export function formatDetail (detail: string | null): string {
  if (detail === null) return '-'
  let parsed: unknown
  try { parsed = JSON.parse(detail) } catch { return detail }
  if (parsed === null || typeof parsed !== 'object') return String(parsed)
  return Object.entries(parsed as Record<string, unknown>)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`)
    .join(' ')
}

function detailOf (e: StoredSecurityEvent): Record<string, unknown> {
  if (e.detail === null) return {}
  try {
    const d = JSON.parse(e.detail) as unknown
    return d !== null && typeof d === 'object' ? d as Record<string, unknown> : {}
  } catch {
    return {}
  }
}

const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined)

/** The generation an event concerns, if it concerns one. */
function generationOf (e: StoredSecurityEvent): number | undefined {
  const d = detailOf(e)
  if (e.type === 'refresh_replayed' || e.type === 'reuse_detected') return num(d.replayed)
  if (e.type === 'fingerprint_mismatch') return num(d.generation)
  return undefined
}

/** One marker line for an event hung on a generation. */
function marker (e: StoredSecurityEvent): string {
  const d = detailOf(e)
  const at = `${iso(e.at)}  ${where(e.ip, e.userAgent)}`
  switch (e.type) {
    case 'refresh_replayed':
      return `~ GRACE REPLAY  ${at}  -> gen ${String(num(d.live) ?? '?')} handed out again`
    case 'reuse_detected':
      return `! REUSE         ${at}  -> gen ${String(num(d.replayed) ?? '?')} replayed while gen ${String(num(d.live) ?? '?')} was live`
    case 'fingerprint_mismatch': {
      const signals = Array.isArray(d.signals) ? d.signals.join(',') : '?'
      return `! FINGERPRINT   ${at}  -> ${signals} changed (policy ${e.reason ?? '?'})`
    }
    /* c8 ignore next 2 -- only the three types above are hung on a generation */
    default:
      return `* ${e.type.toUpperCase()}  ${at}`
  }
}

export interface LineageInput {
  session: Session
  user: User | undefined
  tokens: RefreshTokenRecord[]
  /** The session's events, in any order. */
  events: StoredSecurityEvent[]
  now: number
}

export function renderLineage ({ session: s, user, tokens, events, now }: LineageInput): string {
  const chronological = [...events].sort((a, b) => a.at - b.at || a.id - b.id)
  const byGeneration = new Map<number, StoredSecurityEvent[]>()
  const closing: StoredSecurityEvent[] = []
  for (const e of chronological) {
    const g = generationOf(e)
    if (g !== undefined) byGeneration.set(g, [...(byGeneration.get(g) ?? []), e])
    else if (e.type === 'session_revoked' || e.type === 'revocation_refused') closing.push(e)
  }

  const status = sessionStatus(s, now)
  const statusLine = status === 'revoked'
    ? `REVOKED at ${iso(s.revokedAt)}: ${s.revokedReason ?? '?'}`
    : status === 'expired'
      ? `expired at ${iso(s.expiresAt)}`
      : status === 'idle' ? `expired after inactivity at ${iso(s.idleExpiresAt)}` : 'live'
  const out = [
    `session ${s.id}`,
    `  user      ${user?.username ?? '(deleted)'} (${s.userId})`,
    `  client    ${s.clientId}, scope ${s.scope === '' ? '-' : `"${s.scope}"`}`,
    `  created   ${iso(s.createdAt)}, last used ${iso(s.lastUsedAt)}`,
    `  expires   ${iso(s.expiresAt)} (idle: ${iso(s.idleExpiresAt)})`,
    `  status    ${statusLine}`,
    `  bound to  ip ${s.ip ?? '-'}, device ${s.deviceId ?? '-'}, ua ${shortUa(s.userAgent)}`,
    ''
  ]
  for (const tok of tokens) {
    const head = `gen ${tok.generation}`.padEnd(6)
    const last = tok.generation === s.generation
    const note = tok.parentGeneration === null ? '  (login)' : ''
    out.push(`  ${head} issued ${iso(tok.issuedAt)}  ${where(tok.issuedIp, tok.issuedUserAgent)}${note}`)
    const bar = last ? '        ' : '  |     '
    if (tok.usedAt !== null) out.push(`${bar} used   ${iso(tok.usedAt)}  ${where(tok.usedIp, tok.usedUserAgent)}`)
    else out.push(`${bar} ${!last ? 'never used' : status === 'live' ? '<- the live token' : 'never used: ended with the session'}`)
    for (const e of byGeneration.get(tok.generation) ?? []) out.push(`${bar} ${marker(e)}`)
  }
  for (const e of closing) {
    const by = `${iso(e.at)}  ${where(e.ip, e.userAgent)}`
    if (e.type === 'session_revoked') out.push(`  x REVOKED  ${by}  -> ${e.reason ?? '?'}${formatVia(e)}`)
    else out.push(`  ! REVOCATION REFUSED  ${by}  -> asked by client ${e.clientId ?? '?'}, not the owner`)
  }
  return out.join('\n').replace(/ +$/gm, '') + '\n'
}

function formatVia (e: StoredSecurityEvent): string {
  const via = detailOf(e).via
  return typeof via === 'string' ? ` (via ${via.replace(/_/g, ' ')})` : ''
}
