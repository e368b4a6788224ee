/*
 * Access tokens (RFC 9068), the JWK Set (RFC 7517/7518) and the metadata (RFC 8414), checked with an
 * independent library (jose) against what the server publishes; and app.tokenline.verify(), the
 * verifier Tokenline's own routes and its host use, against forged and expired tokens.
 */
import { createHmac, createPublicKey } from 'node:crypto'
import { createLocalJWKSet, exportJWK, generateKeyPair, importPKCS8, jwtVerify, SignJWT, type JSONWebKeySet, type JWTPayload } from 'jose'
import t from 'tap'
import { build, decodeJwt, type Harness } from './helpers.js'

const ISSUER = 'https://auth.example.test'
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']
const REQUIRED = ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id', 'scope', 'sid']

async function getJson (h: Harness, url: string, headers: Record<string, string> = {}): Promise<{ status: number, type: string, body: Record<string, unknown>, raw: string }> {
  const res = await h.app.inject({ method: 'GET', url, headers })
  return { status: res.statusCode, type: String(res.headers['content-type']), body: res.json(), raw: res.body }
}

for (const alg of ['ES256', 'EdDSA', 'RS256'] as const) {
  t.test(`${alg}: access tokens verify against the published JWKS with jose`, async (t) => {
    const h = await build(t, { algorithm: alg, issuer: ISSUER })
    const jwks = await getJson(h, '/.well-known/jwks.json')
    t.equal(jwks.status, 200)
    t.match(jwks.type, /^application\/(jwk-set\+)?json/)
    const keys = (jwks.body as unknown as JSONWebKeySet).keys
    t.ok(keys.length >= 1, 'at least one key')
    for (const k of keys) {
      for (const m of PRIVATE_MEMBERS) t.notOk(m in k, `no private member ${m} (RFC 7518 §6)`)
      t.not(k.kty, 'oct', 'never a symmetric key')
      t.type(k.kid, 'string')
      t.ok(k.use === 'sig' || k.alg !== undefined, 'use or alg is given')
    }
    t.equal(new Set(keys.map((k) => k.kid)).size, keys.length, 'kids are unique')
    t.notMatch(jwks.raw, /PRIVATE KEY/)
    if (alg === 'RS256') {
      for (const k of keys) t.ok(Buffer.from(k.n as string, 'base64url').length * 8 >= 2048, 'RSA modulus of at least 2048 bits (RFC 7518 §3.3)')
    }

    const meta = await getJson(h, '/.well-known/oauth-authorization-server')
    t.equal(meta.status, 200)
    t.equal(meta.body.issuer, ISSUER)
    t.equal(meta.body.token_endpoint, `${ISSUER}/token`)
    t.equal(meta.body.jwks_uri, `${ISSUER}/.well-known/jwks.json`)
    t.same(meta.body.grant_types_supported, ['password', 'refresh_token'], 'the real grants, not the RFC 8414 default')
    t.same([...(meta.body.token_endpoint_auth_methods_supported as string[])].sort(), ['client_secret_basic', 'client_secret_post', 'none'])
    t.ok(Array.isArray(meta.body.response_types_supported), 'response_types_supported is present (RFC 8414 §2)')
    // The URLs come from the configured issuer, never from the request.
    const evil = await getJson(h, '/.well-known/oauth-authorization-server', { host: 'evil.example', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'http' })
    t.equal(evil.raw, meta.raw, 'a Host header changes nothing')
    t.notMatch(evil.raw, /evil/)

    const alice = (await h.app.tokenline.store.findUserByUsername('alice'))?.id
    const body = await h.login()
    const { header } = decodeJwt(body.access_token)
    t.equal(header.typ, 'at+jwt', 'RFC 9068 §2.1 typ')
    t.equal(header.alg, alg)
    t.ok(keys.some((k) => k.kid === header.kid), 'kid names a published key')

    const { payload, protectedHeader } = await jwtVerify(body.access_token, createLocalJWKSet(jwks.body as unknown as JSONWebKeySet), {
      algorithms: [alg],
      typ: 'at+jwt',
      issuer: meta.body.issuer as string,
      audience: h.app.tokenline.opts.audience,
      requiredClaims: REQUIRED,
      currentDate: new Date(h.clock.now())
    })
    t.equal(protectedHeader.alg, alg)
    for (const c of REQUIRED) t.ok(payload[c] !== undefined, `claim ${c}`)
    t.equal(payload.iss, meta.body.issuer, 'metadata issuer equals iss (RFC 8414 §3.3)')
    t.equal(payload.sub, alice, 'sub is the stable user id')
    t.not(payload.sub, 'alice', 'sub is not the username')
    t.equal(payload.client_id, 'cli')
    t.equal(payload.scope, 'read write')
    t.equal(payload.exp! - payload.iat!, body.expires_in)
    const session = await h.app.tokenline.store.findSession(payload.sid as string)
    t.equal(session?.userId, alice, 'sid names the session just started')

    // A pinned verifier refuses the same token under any other algorithm.
    await t.rejects(jwtVerify(body.access_token, createLocalJWKSet(jwks.body as unknown as JSONWebKeySet), {
      algorithms: [alg === 'RS256' ? 'ES256' : 'RS256'],
      currentDate: new Date(h.clock.now())
    }))

    const second = decodeJwt((await h.login()).access_token).payload
    t.not(second.jti, payload.jti, 'jti is unique per token')
    t.not(second.sid, payload.sid, 'a new login is a new session')

    // The host's verifier agrees with jose.
    t.equal(h.app.tokenline.verify(body.access_token).sub, alice)
  })
}

const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')

t.test('app.tokenline.verify() refuses forged, mistyped and expired tokens', async (t) => {
  const h = await build(t)
  const tl = h.app.tokenline
  const good = (await h.login()).access_token
  const { header, payload } = decodeJwt(good)
  const kid = header.kid as string
  const claims = payload as JWTPayload
  t.equal(tl.verify(good).sid, payload.sid, 'the genuine token verifies')

  const refuse = (label: string, token: string): void => {
    t.throws(() => tl.verify(token), label)
  }
  // RFC 8725 §3.1 / RFC 7518 §3.6: never an unsecured JWS.
  for (const none of ['none', 'None', 'NONE']) {
    refuse(`alg ${none}`, `${b64({ alg: none, typ: 'at+jwt', kid })}.${b64(claims)}.`)
  }
  refuse('alg null', `${b64({ alg: null, typ: 'at+jwt', kid })}.${b64(claims)}.`)
  refuse('empty header', `${b64({})}.${b64(claims)}.`)

  // Key confusion (CVE-2023-48223 class): HS256 keyed with the public key's bytes.
  const publicKey = createPublicKey(tl.currentKey.privatePem)
  const jwk = publicKey.export({ format: 'jwk' })
  const secrets: Array<[string, Buffer | string]> = [
    ['public PEM', publicKey.export({ format: 'pem', type: 'spki' }).toString()],
    ['public DER', publicKey.export({ format: 'der', type: 'spki' })],
    ['JWK x', Buffer.from(jwk.x as string, 'base64url')],
    ['JWK x as text', jwk.x as string]
  ]
  for (const [label, secret] of secrets) {
    const input = `${b64({ alg: 'HS256', typ: 'at+jwt', kid })}.${b64(claims)}`
    refuse(`HS256 with the ${label}`, `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`)
  }

  // Someone else's key: under an unknown kid, under our kid, and offered in a jwk header.
  const attacker = await generateKeyPair('ES256')
  const forge = (h: Record<string, unknown>): Promise<string> => new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', ...h }).sign(attacker.privateKey)
  refuse('unknown kid', await forge({ kid: 'not-a-key' }))
  refuse('our kid, their key', await forge({ kid }))
  refuse('jwk header carrying their key', await forge({ kid, jwk: await exportJWK(attacker.publicKey) }))
  refuse('no kid', await forge({}))
  refuse('path-like kid', await forge({ kid: '../../../../dev/null' }))
  refuse('10 KB kid', await forge({ kid: 'k'.repeat(10 * 1024) }))

  // Our own key, but a wrong typ or claims (RFC 9068 §4).
  const ours = await importPKCS8(tl.currentKey.privatePem, 'ES256')
  const sign = (h: Record<string, unknown>, c: JWTPayload = claims): Promise<string> =>
    new SignJWT(c).setProtectedHeader({ alg: 'ES256', kid, ...h }).sign(ours)
  t.equal(tl.verify(await sign({ typ: 'at+jwt' })).sid, payload.sid, 're-signed with our key and the right typ: accepted')
  t.equal(tl.verify(await sign({ typ: 'application/at+jwt' })).sid, payload.sid, 'typ application/at+jwt is the same media type (RFC 9068 §4)')
  refuse('typ JWT', await sign({ typ: 'JWT' }))
  refuse('typ missing', await sign({}))
  refuse('typ dpop+jwt', await sign({ typ: 'dpop+jwt' }))
  refuse('wrong iss', await sign({ typ: 'at+jwt' }, { ...claims, iss: 'https://evil.example' }))
  refuse('iss with a trailing slash', await sign({ typ: 'at+jwt' }, { ...claims, iss: `${claims.iss}/` }))
  refuse('wrong aud', await sign({ typ: 'at+jwt' }, { ...claims, aud: 'https://other.example' }))
  const { client_id: _c, ...noClient } = claims
  refuse('no client_id', await sign({ typ: 'at+jwt' }, noClient))
  const { sub: _s, ...noSub } = claims
  refuse('no sub', await sign({ typ: 'at+jwt' }, noSub))
  const { exp: _e, ...noExp } = claims
  refuse('no exp', await sign({ typ: 'at+jwt' }, noExp))

  // Syntax.
  refuse('two segments', good.split('.').slice(0, 2).join('.'))
  refuse('four segments', good + '.x')
  refuse('signature flipped', good.slice(0, -3) + (good.endsWith('AAA') ? 'BBB' : 'AAA'))
  refuse('payload swapped', `${good.split('.')[0]}.${b64({ ...claims, sub: 'mallory' })}.${good.split('.')[2]}`)
  refuse('garbage', 'not a jwt')
  refuse('empty', '')

  // Expiry by the injected clock: valid up to the last second before exp, invalid at exp.
  const exp = payload.exp as number
  h.clock.t = (exp - 1) * 1000
  t.equal(tl.verify(good).sid, payload.sid, 'valid at exp - 1 s')
  h.clock.t = exp * 1000
  refuse('expired at exp', good)
  h.clock.t = (exp + 3600) * 1000
  refuse('expired an hour later', good)
})
