import ipaddr from 'ipaddr.js'
import { isIP } from 'node:net'
import type { Session } from '../../db/store.js'
import type { Policy } from '../options.js'

/** What a request looks like, as far as binding goes. */
export interface Fingerprint {
  /** Raw user agent, truncated; stored for forensics. */
  userAgent: string
  ip: string
  deviceId: string | null
}

export type Signal = 'user_agent' | 'ip' | 'device_id'

export interface BindingPolicy {
  userAgent: Policy
  ip: Policy
  deviceId: Policy
}

export const MAX_USER_AGENT = 512

/**
 * Normalises a user agent so a browser's routine update does not break the binding: lower case, every
 * version number (`120.0.6099.71`, `10_15_7`, `14`) folded to `#`, whitespace collapsed. The browser
 * and OS families, and the device model's name, still have to match.
 */
export function normaliseUserAgent (ua: string): string {
  return ua
    .slice(0, MAX_USER_AGENT)
    .toLowerCase()
    .replace(/\d+(?:[._]\d+)*/g, '#')
    .replace(/\s+/g, ' ')
    .trim()
}

/** ipaddr.js documents `toFixedLengthString` (eight 4-digit groups) but its type declarations omit it. */
type FixedLengthIPv6 = ipaddr.IPv6 & { toFixedLengthString: () => string }

/**
 * The address in `ip`, IPv4-mapped IPv6 folded to IPv4; undefined for anything that is not one. Only
 * what Node itself takes for an address is read, so ipaddr.js's laxer IPv4 forms (`127.1`, `0x7f.0.0.1`)
 * stay as unparsed text. A zone id names a local interface, not part of the address (RFC 4007 §11),
 * so it is dropped.
 */
function parseIp (ip: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  if (isIP(ip) === 0) return undefined
  const bare = ip.replace(/%.*$/, '')
  // ipaddr.js reads `::` followed by a dotted quad as IPv4-mapped; it is the IPv4-compatible address
  // (RFC 4291 §2.5.5.1), a distinct one, which `0::` spells without that shortcut.
  return ipaddr.process(/^::\d+\.\d+\.\d+\.\d+$/.test(bare) ? `0${bare}` : bare)
}

/**
 * The one place an address becomes the text stored with sessions and events: IPv4 dotted, IPv6 as
 * eight 4-digit lower-case groups.
 */
function written (addr: ipaddr.IPv4 | ipaddr.IPv6): string {
  return addr.kind() === 'ipv4' ? addr.toString() : (addr as FixedLengthIPv6).toFixedLengthString()
}

/**
 * `::ffff:203.0.113.7` is `203.0.113.7`; IPv6 is expanded to eight 4-digit groups. Anything else (a
 * proxy the host trusts may forward any text) is kept as it came, except that a leading `::ffff:` is
 * dropped from a dotted quad: databases already hold such values that way.
 */
export function normaliseIp (ip: string): string {
  const addr = parseIp(ip)
  if (addr !== undefined) return written(addr)
  return /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)?.[1] ?? ip
}

/**
 * The network an address belongs to, for matching: /24 for IPv4, /64 for IPv6, written as
 * `198.51.100.0/24` and `2001:0db8:0001:0002::/64` (lockout keys are digests of this text, so it never
 * changes). Text that is not an address is compared as text, split on colons if it has any.
 */
export function ipPrefix (ip: string): string {
  const addr = parseIp(ip)
  if (addr?.kind() === 'ipv4') return `${ipaddr.IPv4.networkAddressFromCIDR(`${addr.toString()}/24`).toString()}/24`
  if (addr !== undefined) {
    const network = ipaddr.IPv6.networkAddressFromCIDR(`${written(addr)}/64`)
    return `${written(network).split(':').slice(0, 4).join(':')}::/64`
  }
  const n = normaliseIp(ip)
  return n.includes(':') ? `${n.split(':').slice(0, 4).join(':')}::/64` : n
}

export function sameNetwork (a: string | null, b: string): boolean {
  if (a === null) return false
  return ipPrefix(a) === ipPrefix(b)
}

/**
 * What a request is compared with: the facts a session bound at login, named as the session names
 * them, so a session is one as it stands.
 */
export type Bound = Pick<Session, 'userAgent' | 'ip' | 'deviceId'>

export interface BindingVerdict {
  /** The most severe policy among the signals that did not match. */
  action: Policy
  mismatched: Signal[]
}

const SEVERITY: Record<Policy, number> = { ignore: 0, log: 1, reject: 2, revoke: 3 }

/**
 * Compares a request with the fingerprint bound at login. A device id bound at login must be presented
 * again (missing counts as changed); a session bound without one ignores a device id sent later.
 */
export function checkBinding (bound: Bound, fp: Fingerprint, policy: BindingPolicy): BindingVerdict {
  const mismatched: Signal[] = []
  let action: Policy = 'ignore'
  const note = (signal: Signal, p: Policy): void => {
    if (p === 'ignore') return
    mismatched.push(signal)
    if (SEVERITY[p] > SEVERITY[action]) action = p
  }
  if (normaliseUserAgent(bound.userAgent ?? '') !== normaliseUserAgent(fp.userAgent)) note('user_agent', policy.userAgent)
  if (!sameNetwork(bound.ip, fp.ip)) note('ip', policy.ip)
  if (bound.deviceId !== null && bound.deviceId !== fp.deviceId) note('device_id', policy.deviceId)
  return { action, mismatched }
}

/**
 * The grace window hands the already-issued successor only to the same device that received it:
 * every signal not set to `ignore` must match the request that consumed the parent.
 */
export function sameDevice (consumer: Bound, fp: Fingerprint, policy: BindingPolicy): boolean {
  return checkBinding(consumer, fp, policy).mismatched.length === 0
}
