/** Fastify's `trustProxy`, as proxy-addr's trust function `(address, hop) => boolean`. */
export type TrustProxy = boolean | string | ((address: string, hop: number) => boolean)

/**
 * Translates the TOKENLINE_TRUST_PROXY setting into Fastify's `trustProxy`. The client IP feeds the
 * fingerprint binding, so the header must never be believed beyond the proxies (RFC 9700 §4.13):
 *
 * - `false`: the socket address is the client; X-Forwarded-For is not read.
 * - `true` means what `on` means, a proxy on this host (`loopback`), never Fastify's "trust every hop",
 *   which would take the leftmost entry the client itself wrote.
 * - A hop count: Fastify 5 treats a bare number as "trust nothing" (a hop count cannot tell a proxy
 *   from a client that connects directly), so the setting is honoured here explicitly, as proxy-addr
 *   once did. Documented as safe only when nothing reaches the server except through the proxies.
 * - Addresses/CIDRs/`loopback`...: passed through.
 */
export function trustProxyFor (setting: boolean | number | string): TrustProxy {
  if (setting === true) return 'loopback'
  if (setting === false || setting === 0) return false
  if (typeof setting === 'number') return (_address, hop) => hop < setting
  return setting
}
