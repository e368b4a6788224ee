import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { KEY_CHECK_INTERVAL_MS, RETIRE_MARGIN_S, rotateKeys } from '../server/tokens/key-rotation.js'
import { RSA_BITS } from '../server/tokens/signing-keys.js'
import type { Algorithm } from '../server/options.js'
import { build, PASSWORD, type Harness } from './helpers.js'
import { addAliceAndCli, CHEAP_ARGON2_ENV, postForm, runCli, startServer } from './processes.js'

/*
 * Signing key rotation: after `keys rotate`, tokens signed before it keep verifying against the
 * published JWK Set (RFC 7517 §5) until they expire, new tokens carry the new kid (RFC 7515 §4.1.4),
 * the retired key leaves the JWKS once its last token has expired, and the JWKS never holds a private
 * member (RFC 7518 §6).
 */

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']

async function jwks (h: Harness): Promise<JSONWebKeySet> {
  const res = await h.app.inject({ method: 'GET', url: '/.well-known/jwks.json' })
  const set = res.json() as JSONWebKeySet
  return set
}

function assertPublicOnly (t: Test, set: JSONWebKeySet): void {
  for (const k of set.keys) {
    for (const m of PRIVATE_MEMBERS) t.notOk(m in k, `key ${k.kid}: no private member ${m}`)
    t.not(k.kty, 'oct', 'no symmetric key')
    t.ok(k.use === 'sig' || k.alg !== undefined, 'use or alg')
  }
  t.equal(new Set(set.keys.map((k) => k.kid)).size, set.keys.length, 'kids are unique')
}

async function verifyAt (h: Harness, token: string, set: JSONWebKeySet): Promise<unknown> {
  const alg = decodeProtectedHeader(token).alg as string
  return await jwtVerify(token, createLocalJWKSet(set), {
    algorithms: [alg],
    typ: 'at+jwt',
    issuer: h.app.tokenline.opts.issuer,
    audience: h.app.tokenline.opts.audience,
    currentDate: new Date(h.clock.now())
  })
}

for (const alg of ['ES256', 'EdDSA', 'RS256'] as Algorithm[]) {
  t.test(`${alg}: rotation keeps old tokens verifiable until they expire`, async (t) => {
    const h = await build(t, { algorithm: alg })
    const before = await h.login()
    const oldKid = decodeProtectedHeader(before.access_token).kid as string
    const first = await jwks(h)
    assertPublicOnly(t, first)
    t.same(first.keys.map((k) => k.kid), [oldKid], 'one key before rotation')
    if (alg === 'RS256') {
      const n = Buffer.from(first.keys[0]?.n as string, 'base64url')
      t.ok(n.length * 8 >= RSA_BITS && RSA_BITS >= 2048, `RSA modulus ${n.length * 8} bits (RFC 7518 §3.3)`)
    }

    const rotation = await rotateKeys(h.app.tokenline.store, h.app.tokenline.opts, h.clock.now())
    t.equal(rotation.key.alg, alg, 'the new key has the configured algorithm')
    t.not(rotation.key.kid, oldKid)
    t.same(rotation.retired.map((k) => k.kid), [oldKid], 'the signing key was retired')
    t.equal(rotation.retiredUntil, h.clock.now() + (900 + RETIRE_MARGIN_S) * 1000 + KEY_CHECK_INTERVAL_MS,
      'published for the access-token lifetime, the check interval and a margin')

    // Published before it signs anything: the JWKS has both keys at once.
    const both = await jwks(h)
    assertPublicOnly(t, both)
    t.same(both.keys.map((k) => k.kid).sort(), [oldKid, rotation.key.kid].sort(), 'old and new keys are published')

    // The running server notices within KEY_CHECK_INTERVAL_MS, without a restart or reloadKeys().
    h.clock.advance(KEY_CHECK_INTERVAL_MS / 1000)
    const after = await h.login()
    t.equal(decodeProtectedHeader(after.access_token).kid, rotation.key.kid, 'new tokens carry the new kid')
    await verifyAt(h, after.access_token, both)
    await verifyAt(h, before.access_token, both)
    // verifyAt (jose's jwtVerify) throws on any failure: reaching here is the assertion.
    t.pass('the pre-rotation token still verifies against the JWKS')
    const viaRefresh = await h.refresh(before.refresh_token as string)
    t.equal(decodeProtectedHeader(viaRefresh.body.access_token).kid, rotation.key.kid, 'refreshes sign with the new key too')
    t.ok(h.app.tokenline.verify(before.access_token), 'the server itself still accepts the old token (sessions API)')

    // Just before the old token's exp it still verifies; after, jose refuses it for its age, not its key.
    h.clock.advance(900 - KEY_CHECK_INTERVAL_MS / 1000 - 1)
    await verifyAt(h, before.access_token, await jwks(h))
    h.clock.advance(2)
    await t.rejects(verifyAt(h, before.access_token, await jwks(h)), { code: 'ERR_JWT_EXPIRED' })
    t.ok((await jwks(h)).keys.some((k) => k.kid === oldKid), 'still published within the margin')

    // Past the retired key's expiry, it is gone from the JWKS; the new key stays.
    h.clock.t = rotation.retiredUntil
    const later = await jwks(h)
    t.same(later.keys.map((k) => k.kid), [rotation.key.kid], 'the old key left the JWKS after its last token expired')
    assertPublicOnly(t, later)
  })
}

t.test('the retired key stays as long as the longest per-client access-token lifetime', async (t) => {
  const h = await build(t, { accessTokenTtl: 300 })
  await h.addClient({ id: 'long', accessTtl: 3600 })
  const res = await h.token({ grant_type: 'password', client_id: 'long', username: 'alice', password: PASSWORD })
  const token = res.json().access_token as string
  const r = await rotateKeys(h.app.tokenline.store, h.app.tokenline.opts, h.clock.now())
  t.equal(r.retiredUntil, h.clock.now() + (3600 + RETIRE_MARGIN_S) * 1000 + KEY_CHECK_INTERVAL_MS, 'the client override wins over the server setting')
  h.clock.advance(3599)
  await verifyAt(h, token, await jwks(h))
  // verifyAt throws on any failure: reaching here is the assertion.
  t.pass('a 1-hour token of that client verifies until its exp')
})

t.test('rotating twice: each retired key keeps its own expiry; keys past it are deleted', async (t) => {
  const h = await build(t)
  const store = h.app.tokenline.store
  const r1 = await rotateKeys(store, h.app.tokenline.opts, h.clock.now())
  h.clock.advance(60)
  const r2 = await rotateKeys(store, h.app.tokenline.opts, h.clock.now())
  t.same(r2.retired.map((k) => k.kid), [r1.key.kid], 'only the signing key is retired again')
  t.equal((await store.listKeys()).length, 3)
  const published = (await jwks(h)).keys.map((k) => k.kid)
  t.equal(published.length, 3, 'both retired keys and the new one are published')
  h.clock.t = r2.retiredUntil + 1
  await rotateKeys(store, h.app.tokenline.opts, h.clock.now())
  const left = await store.listKeys()
  t.equal(left.length, 2, 'a rotation deletes keys past their expiry, private part included')
  t.notOk(left.some((k) => k.kid === r1.key.kid || r1.retired.some((x) => x.kid === k.kid)))
})

t.test('tokenline keys rotate and keys list against a running server', async (t) => {
  const dir = t.testdir({})
  const env = { TOKENLINE_DB: join(dir, 'tokenline.db'), ...CHEAP_ARGON2_ENV }
  await addAliceAndCli(t, env, PASSWORD)
  const server = await startServer(t, env)
  let rt = ''
  /** A grant of `cli` that must succeed: its access token, and its refresh token kept in `rt`. */
  const token = async (params: Record<string, string>): Promise<string> => {
    const res = await postForm<{ access_token: string, refresh_token: string }>(`${server.url}/token`, { client_id: 'cli', ...params })
    if (res.status !== 200) throw new Error(JSON.stringify(res.body))
    rt = res.body.refresh_token
    return res.body.access_token
  }
  const before = await token({ grant_type: 'password', username: 'alice', password: PASSWORD })
  const oldKid = decodeProtectedHeader(before).kid as string

  const rotated = await runCli(['keys', 'rotate'], { env })
  t.equal(rotated.code, 0, rotated.stderr)
  const m = /^new signing key (\S+) \(ES256\)\nretired (\S+) \(ES256\): stays in the JWKS until \d{4}-\d\d-\d\dT[\d:.]+Z\n$/.exec(rotated.stdout)
  t.ok(m, `rotate output: ${rotated.stdout}`)
  const newKid = m?.[1]
  t.equal(m?.[2], oldKid)
  t.notMatch(rotated.stdout + rotated.stderr, /PRIVATE KEY|"d":/, 'no private key is printed')

  const list = await runCli(['keys', 'list'], { env })
  t.equal(list.code, 0)
  t.match(list.stdout, new RegExp(`${newKid} +ES256 +signing`))
  t.match(list.stdout, new RegExp(`${oldKid} +ES256 +retired`))
  t.notMatch(list.stdout, /PRIVATE KEY/)

  const set = (await (await fetch(`${server.url}/.well-known/jwks.json`)).json()) as JSONWebKeySet
  t.same(set.keys.map((k) => k.kid).sort(), [oldKid, newKid].sort(), 'the running server publishes the new key at once')

  // The server checks for rotated keys every KEY_CHECK_INTERVAL_MS of its real clock: poll with
  // refreshes (which no throttle counts) until it has.
  const deadline = Date.now() + 10 * KEY_CHECK_INTERVAL_MS
  let kid = oldKid
  while (kid !== newKid && Date.now() < deadline) {
    kid = decodeProtectedHeader(await token({ grant_type: 'refresh_token', refresh_token: rt })).kid as string
    if (kid !== newKid) await new Promise((resolve) => setTimeout(resolve, 100))
  }
  t.equal(kid, newKid, 'the running server signs with the new key without a restart')

  const bad = await runCli(['keys', 'spin'], { env })
  t.equal(bad.code, 2)
  t.match(bad.stderr, /^tokenline: usage: tokenline keys rotate \[--drop-old\] \| keys list\n$/)
})

t.test('keys rotate --drop-old: a possibly leaked key leaves the JWKS at once', async (t) => {
  const h = await build(t)
  const before = await h.login()
  const oldKid = decodeProtectedHeader(before.access_token).kid as string
  const r = await rotateKeys(h.app.tokenline.store, h.app.tokenline.opts, h.clock.now(), { dropOld: true })
  const set = await jwks(h)
  t.same(set.keys.map((k) => k.kid), [r.key.kid], 'only the new key is published')
  await t.rejects(verifyAt(h, before.access_token, set), { code: 'ERR_JWKS_NO_MATCHING_KEY' }, 'tokens of the dropped key no longer verify')
  h.clock.advance(KEY_CHECK_INTERVAL_MS / 1000)
  await h.app.inject({ method: 'GET', url: '/healthz' })
  t.throws(() => h.app.tokenline.verify(before.access_token), 'the server itself refuses them too once it has reloaded')
  const refreshed = await h.refresh(before.refresh_token as string)
  t.equal(decodeProtectedHeader(refreshed.body.access_token).kid, r.key.kid, 'a refresh gets a token of the new key')
  t.not(oldKid, r.key.kid)

  const cli = await runCli(['keys', 'rotate', '--drop-old', 'extra'], { env: { TOKENLINE_DB: h.database } })
  t.equal(cli.code, 2, 'extra arguments refused')
})
