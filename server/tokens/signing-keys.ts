import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type JsonWebKey } from 'node:crypto'
import { createSigner, createVerifier, createDecoder } from 'fast-jwt'
import type { NewSigningKey } from '../../db/store.js'
import { OAuthError } from '../errors.js'
import type { Algorithm } from '../options.js'

export interface KeyMaterial {
  kid: string
  alg: Algorithm
  privatePem: string
  publicJwk: JsonWebKey
}

/** RSA keys are 2048 bits or more (RFC 7518 §3.3). */
export const RSA_BITS = 2048

export function generateKey (alg: Algorithm): KeyMaterial {
  const pair = alg === 'ES256'
    ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : alg === 'EdDSA'
      ? generateKeyPairSync('ed25519')
      : generateKeyPairSync('rsa', { modulusLength: RSA_BITS })
  const kid = randomBytes(12).toString('base64url')
  const jwk = pair.publicKey.export({ format: 'jwk' })
  return {
    kid,
    alg,
    privatePem: pair.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicJwk: { ...jwk, kid, alg, use: 'sig' }
  }
}

/** A new key as the store keeps it, its public JWK as JSON text. */
export function generateStoredKey (alg: Algorithm): NewSigningKey {
  const k = generateKey(alg)
  return { kid: k.kid, alg: k.alg, privatePem: k.privatePem, publicJwk: JSON.stringify(k.publicJwk) }
}

/** Only the members a public JWK may carry (RFC 7517 §4, RFC 7518 §6): never d, p, q, dp, dq, qi, k. */
const PUBLIC_MEMBERS = ['kty', 'crv', 'x', 'y', 'n', 'e', 'kid', 'alg', 'use'] as const

export function publicOnly (jwk: JsonWebKey): JsonWebKey {
  const out: JsonWebKey = {}
  const src = jwk as Record<string, unknown>
  const dst = out as Record<string, unknown>
  for (const m of PUBLIC_MEMBERS) if (src[m] !== undefined) dst[m] = src[m]
  return out
}

export interface AccessClaims {
  iss: string
  sub: string
  aud: string
  exp: number
  iat: number
  jti: string
  client_id: string
  scope: string
  sid: string
}

export type Sign = (claims: AccessClaims) => string

/** One signer per key, built once; fast-jwt's sync form (the async one is ~2× slower). */
export function makeSigner (key: KeyMaterial): Sign {
  const signer = createSigner({
    key: key.privatePem,
    algorithm: key.alg,
    kid: key.kid,
    header: { alg: key.alg, typ: 'at+jwt' }
    // iat and exp come from Tokenline's own clock, in the claims; fast-jwt keeps a given iat.
  })
  return (claims) => signer(claims as unknown as Record<string, unknown>)
}

/**
 * Verifies Tokenline's own access tokens: algorithm pinned to the key's, `typ` at+jwt, issuer and
 * audience exact, required claims present, and `exp` checked against the injected clock.
 * fast-jwt's clock options are in ms: the seconds → ms conversion happens here and nowhere else.
 */
export function makeVerifier (keys: KeyMaterial[], opts: { issuer: string, audience: string, now: () => number }): (token: string) => AccessClaims {
  const byKid = new Map(keys.map((k) => [k.kid, { k, pub: createPublicKey(createPrivateKey(k.privatePem)) }]))
  const decode = createDecoder({ complete: true })
  const verifiers = new Map<string, (t: string) => AccessClaims>()
  return (token: string) => {
    const { header } = decode(token) as { header: { kid?: unknown } }
    const entry = typeof header.kid === 'string' ? byKid.get(header.kid) : undefined
    if (entry === undefined) throw new OAuthError('invalid_token', 'access token signed with an unknown key')
    let verify = verifiers.get(entry.k.kid)
    if (verify === undefined) {
      const v = createVerifier({
        key: entry.pub.export({ format: 'pem', type: 'spki' }).toString(),
        algorithms: [entry.k.alg],
        checkTyp: 'at+jwt',
        allowedIss: opts.issuer,
        allowedAud: opts.audience,
        requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id', 'sid'],
        // Expiry is checked below against the injected clock, not fast-jwt's Date.now().
        ignoreExpiration: true
      })
      verify = (t: string) => {
        const claims = v(t) as AccessClaims
        if (typeof claims.exp !== 'number' || claims.exp * 1000 <= opts.now()) throw new OAuthError('invalid_token', 'access token expired')
        return claims
      }
      verifiers.set(entry.k.kid, verify)
    }
    return verify(token)
  }
}
