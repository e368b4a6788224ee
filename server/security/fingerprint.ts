import { isIPv4, isIPv6 } from 'node:net'
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

/** `::ffff:203.0.113.7` is `203.0.113.7`; IPv6 is expanded to eight 4-digit groups. */
export function normaliseIp (ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)
  if (mapped?.[1] !== undefined) return mapped[1]
  if (!isIPv6(ip)) return ip
  const full = expandIPv6(ip)
  // The same mapped address spelled in hex or in full (::ffff:cb00:7107), as a proxy may write it.
  const hex = /^0000:0000:0000:0000:0000:ffff:([0-9a-f]{4}):([0-9a-f]{4})$/.exec(full)
  if (hex?.[1] !== undefined && hex[2] !== undefined) {
    const [hi, lo] = [parseInt(hex[1], 16), parseInt(hex[2], 16)]
    return [hi >> 8, hi & 255, lo >> 8, lo & 255].join('.')
  }
  return full
}

function expandIPv6 (ip: string): string {
  let addr = ip.toLowerCase().replace(/%.*$/, '')
  // A trailing dotted quad (e.g. ::1.2.3.4) becomes two groups.
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(addr)
  if (quad !== null) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number]
    addr = addr.slice(0, quad.index) + ((a << 8) | b).toString(16) + ':' + ((c << 8) | d).toString(16)
  }
  const [head, tail] = addr.includes('::') ? addr.split('::') as [string, string] : [addr, undefined]
  const h = head === '' ? [] : head.split(':')
  const t = tail === undefined || tail === '' ? [] : tail.split(':')
  const fill = tail === undefined ? [] : Array<string>(8 - h.length - t.length).fill('0')
  return [...h, ...fill, ...t].map((g) => g.padStart(4, '0')).join(':')
}

/** The network an address belongs to, for matching: /24 for IPv4, /64 for IPv6. */
export function ipPrefix (ip: string): string {
  const n = normaliseIp(ip)
  if (isIPv4(n)) return n.split('.').slice(0, 3).join('.') + '.0/24'
  if (isIPv6(ip) || n.includes(':')) return n.split(':').slice(0, 4).join(':') + '::/64'
  return n
}

export function sameNetwork (a: string | null, b: string): boolean {
  if (a === null) return false
  return ipPrefix(a) === ipPrefix(b)
}

export interface Bound {
  user_agent: string | null
  ip: string | null
  device_id: string | null
}

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
  if (normaliseUserAgent(bound.user_agent ?? '') !== normaliseUserAgent(fp.userAgent)) note('user_agent', policy.userAgent)
  if (!sameNetwork(bound.ip, fp.ip)) note('ip', policy.ip)
  if (bound.device_id !== null && bound.device_id !== fp.deviceId) note('device_id', policy.deviceId)
  return { action, mismatched }
}

/**
 * The grace window hands the already-issued successor only to the same device that received it:
 * every signal not set to `ignore` must match the request that consumed the parent.
 */
export function sameDevice (consumer: Bound, fp: Fingerprint, policy: BindingPolicy): boolean {
  return checkBinding(consumer, fp, policy).mismatched.length === 0
}
