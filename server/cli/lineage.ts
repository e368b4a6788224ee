import type { EventRow, SessionRow, TokenRow, UserRow } from '../../db/sqlite/store.js'
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

function detailOf (e: EventRow): Record<string, unknown> {
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
function generationOf (e: EventRow): number | undefined {
  const d = detailOf(e)
  if (e.type === 'refresh_replayed' || e.type === 'reuse_detected') return num(d.replayed)
  if (e.type === 'fingerprint_mismatch') return num(d.generation)
  return undefined
}

/** One marker line for an event hung on a generation. */
function marker (e: EventRow): string {
  const d = detailOf(e)
  const at = `${iso(e.at)}  ${where(e.ip, e.user_agent)}`
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
  session: SessionRow
  user: UserRow | undefined
  tokens: TokenRow[]
  /** The session's events, in any order. */
  events: EventRow[]
  now: number
}

export function renderLineage ({ session: s, user, tokens, events, now }: LineageInput): string {
  const chronological = [...events].sort((a, b) => a.at - b.at || a.id - b.id)
  const byGeneration = new Map<number, EventRow[]>()
  const closing: EventRow[] = []
  for (const e of chronological) {
    const g = generationOf(e)
    if (g !== undefined) byGeneration.set(g, [...(byGeneration.get(g) ?? []), e])
    else if (e.type === 'session_revoked' || e.type === 'revocation_refused') closing.push(e)
  }

  const status = sessionStatus(s, now)
  const statusLine = status === 'revoked'
    ? `REVOKED at ${iso(s.revoked_at)}: ${s.revoked_reason ?? '?'}`
    : status === 'expired'
      ? `expired at ${iso(s.expires_at)}`
      : status === 'idle' ? `expired after inactivity at ${iso(s.idle_expires_at)}` : 'live'
  const out = [
    `session ${s.id}`,
    `  user      ${user?.username ?? '(deleted)'} (${s.user_id})`,
    `  client    ${s.client_id}, scope ${s.scope === '' ? '-' : `"${s.scope}"`}`,
    `  created   ${iso(s.created_at)}, last used ${iso(s.last_used_at)}`,
    `  expires   ${iso(s.expires_at)} (idle: ${iso(s.idle_expires_at)})`,
    `  status    ${statusLine}`,
    `  bound to  ip ${s.ip ?? '-'}, device ${s.device_id ?? '-'}, ua ${shortUa(s.user_agent)}`,
    ''
  ]
  for (const tok of tokens) {
    const head = `gen ${tok.generation}`.padEnd(6)
    const last = tok.generation === s.generation
    const note = tok.parent_generation === null ? '  (login)' : ''
    out.push(`  ${head} issued ${iso(tok.issued_at)}  ${where(tok.issued_ip, tok.issued_user_agent)}${note}`)
    const bar = last ? '        ' : '  |     '
    if (tok.used_at !== null) out.push(`${bar} used   ${iso(tok.used_at)}  ${where(tok.used_ip, tok.used_user_agent)}`)
    else out.push(`${bar} ${!last ? 'never used' : status === 'live' ? '<- the live token' : 'never used: ended with the session'}`)
    for (const e of byGeneration.get(tok.generation) ?? []) out.push(`${bar} ${marker(e)}`)
  }
  for (const e of closing) {
    const by = `${iso(e.at)}  ${where(e.ip, e.user_agent)}`
    if (e.type === 'session_revoked') out.push(`  x REVOKED  ${by}  -> ${e.reason ?? '?'}${formatVia(e)}`)
    else out.push(`  ! REVOCATION REFUSED  ${by}  -> asked by client ${e.client_id ?? '?'}, not the owner`)
  }
  return out.join('\n').replace(/ +$/gm, '') + '\n'
}

function formatVia (e: EventRow): string {
  const via = detailOf(e).via
  return typeof via === 'string' ? ` (via ${via.replace(/_/g, ' ')})` : ''
}
