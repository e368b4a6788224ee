/*
 * The surface of POST /token: framing, content types, parameter parsing, client authentication and
 * malformed refresh tokens. Every refused request must get an RFC 6749 §5.2 JSON error with no-store
 * headers, never a 5xx or Fastify's own error shape, must not reach argon2, and must leave the
 * sessions and the token lineage exactly as they were.
 */
import Database from 'better-sqlite3'
import { decodeJwt } from 'jose'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { connect } from 'node:net'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import t from 'tap'
import type { Test } from 'tap'
import { buildServer } from '../server/standalone/app.js'
import { createPasswords } from '../server/security/passwords.js'
import { newRefreshToken, randomId } from '../server/tokens/refresh-format.js'
import { basicAuth, build, CHEAP_ARGON2, countVerifies, form, PASSWORD, type Harness, type TokenBody } from './helpers.js'
import { tempDir } from './processes.js'

const FORM = 'application/x-www-form-urlencoded'
const LOGIN = { grant_type: 'password', client_id: 'cli', username: 'alice', password: PASSWORD }

/** Anything that looks like a credential Tokenline hands out. */
const TOKENISH = /tlrt_|eyJ[\w-]+\.[\w-]+\.|access_token|refresh_token"\s*:/

/**
 * The checks every refused /token response must pass: a controlled status, the RFC 6749 §5.2 JSON
 * shape (and not Fastify's `{statusCode, code, message}`), no-store headers, no stack, no token.
 */
function assertErrorResponse (t: Test, res: LightMyRequestResponse, status: number, error: string | string[], label = ''): Record<string, unknown> {
  const at = label === '' ? '' : ` (${label})`
  t.ok(res.statusCode < 500, `status below 500${at}`)
  t.equal(res.statusCode, status, `status ${status}${at}`)
  t.match(res.headers['content-type'], /^application\/json/, `JSON content type${at}`)
  t.match(res.headers['cache-control'], /no-store/, `cache-control no-store${at}`)
  t.equal(res.headers.pragma, 'no-cache', `pragma no-cache${at}`)
  t.notMatch(res.body, TOKENISH, `no token in the body${at}`)
  t.notMatch(res.body, /\bat .+:\d+:\d+|node_modules|\/server\/|SQLITE/, `no stack, path or SQL${at}`)
  t.equal(res.headers['set-cookie'], undefined, `no cookie set${at}`)
  let body: Record<string, unknown> = {}
  try { body = res.json() } catch { t.fail(`body is JSON${at}: ${res.body}`) }
  const allowed = new Set(['error', 'error_description', 'reason'])
  t.same(Object.keys(body).filter((k) => !allowed.has(k)), [], `only RFC 6749 §5.2 members${at}`)
  const codes = Array.isArray(error) ? error : [error]
  t.ok(codes.includes(body.error as string), `error ${codes.join(' or ')}${at}, got ${String(body.error)}`)
  if (body.error_description !== undefined) {
    t.type(body.error_description, 'string')
    // RFC 6749 §5.2: error_description is limited to %x20-21 / %x23-5B / %x5D-7E.
    t.match(body.error_description, /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/, `error_description charset${at}`)
  }
  return body
}

/** A fingerprint of everything a token request may change: sessions and the lineage, row by row. */
function dbState (h: Harness): string {
  const db = new Database(h.database, { readonly: true })
  try {
    const sessions = db.prepare('SELECT * FROM sessions ORDER BY id').all()
    const tokens = db.prepare('SELECT hex(digest) AS d, session_id, generation, used_at, successor_sealed IS NOT NULL AS sealed FROM refresh_tokens ORDER BY d').all()
    const users = db.prepare('SELECT id, password_hash, disabled_at FROM users ORDER BY id').all()
    return JSON.stringify({ sessions, tokens, users })
  } finally {
    db.close()
  }
}

/** POST exactly `payload` with exactly `headers`. */
const postRaw = (h: Harness, payload: string | Buffer, headers: Record<string, string> = { 'content-type': FORM }, url = '/token'): Promise<LightMyRequestResponse> =>
  h.app.inject({ method: 'POST', url, headers, payload })

t.test('methods other than POST get 405 JSON with Allow: POST', async (t) => {
  const h = await build(t)
  for (const method of ['GET', 'PUT', 'DELETE', 'PATCH'] as const) {
    const plain = await h.app.inject({ method, url: '/token' })
    assertErrorResponse(t, plain, 405, 'invalid_request', method)
    t.equal(plain.headers.allow, 'POST', `${method} Allow header`)
    // A full, valid login body does not make another method work.
    const withBody = await h.app.inject({ method, url: '/token', headers: { 'content-type': FORM }, payload: form(LOGIN) })
    assertErrorResponse(t, withBody, 405, 'invalid_request', `${method} with a login body`)
    // RFC 9110 §15.5.6: the method is refused whatever the body is.
    const oddBody = await h.app.inject({ method, url: '/token', headers: { 'content-type': 'text/plain' }, payload: 'x' })
    assertErrorResponse(t, oddBody, 405, 'invalid_request', `${method} with a text/plain body`)
  }
  const head = await h.app.inject({ method: 'HEAD', url: '/token' })
  t.ok(head.statusCode === 405 || head.statusCode === 400, 'HEAD is refused')
  t.equal(head.body, '', 'HEAD carries no body, so no token')
})

t.test('only form and JSON bodies in UTF-8 are read: any other content type is invalid_request before argon2', async (t) => {
  const h = await build(t)
  const verifies = countVerifies(h)
  const before = dbState(h)
  const body = form(LOGIN)
  const refused: Array<[string, Record<string, string>]> = [
    ['missing', {}],
    ['text/plain (CORS simple request)', { 'content-type': 'text/plain' }],
    ['multipart/form-data', { 'content-type': 'multipart/form-data; boundary=x' }],
    ['ISO-8859-1 form', { 'content-type': `${FORM};charset=ISO-8859-1` }],
    ['invalid/@@##', { 'content-type': 'invalid/@@##' }],
    ['script', { 'content-type': '</><script>alert(1)</script>' }],
    ['text', { 'content-type': 'text' }],
    ['text/[html]', { 'content-type': 'text/[html]' }],
    ['""', { 'content-type': '""' }],
    ['empty', { 'content-type': '' }]
  ]
  for (const [label, headers] of refused) {
    assertErrorResponse(t, await postRaw(h, body, headers), 400, 'invalid_request', label)
  }
  // RFC 8259 §8.1: JSON between systems is UTF-8; a valid JSON login labelled otherwise is refused.
  assertErrorResponse(t, await postRaw(h, JSON.stringify(LOGIN), { 'content-type': 'application/json; charset=ISO-8859-1' }), 400, 'invalid_request', 'ISO-8859-1 JSON')
  // A multipart body that really carries the login must not get through either.
  const multipart = '--x\r\nContent-Disposition: form-data; name="grant_type"\r\n\r\npassword\r\n--x--\r\n'
  assertErrorResponse(t, await postRaw(h, multipart, { 'content-type': 'multipart/form-data; boundary=x' }), 400, 'invalid_request', 'real multipart')
  t.equal(verifies.n, 0, 'no refused content type reached argon2')
  t.equal(dbState(h), before, 'nothing changed in the database')

  // Media types and charset names are case-insensitive (RFC 9110 §8.3.1).
  for (const ct of ['APPLICATION/JSON', 'application/json; charset=utf-8']) {
    t.equal((await postRaw(h, JSON.stringify(LOGIN), { 'content-type': ct })).statusCode, 200, `accepted: ${ct}`)
  }
  for (const ct of ['Application/X-WWW-Form-Urlencoded; charset=UTF-8', `${FORM}; charset="utf-8"`, FORM]) {
    const res = await postRaw(h, body, { 'content-type': ct })
    t.equal(res.statusCode, 200, `accepted: ${ct}`)
    t.equal(res.headers['cache-control'], 'no-store')
    t.equal(res.headers.pragma, 'no-cache')
  }
})

t.test('JSON bodies: flat string objects accepted, anything else refused', async (t) => {
  const h = await build(t)
  const ok = await postRaw(h, JSON.stringify(LOGIN), { 'content-type': 'application/json' })
  t.equal(ok.statusCode, 200, 'a JSON login works')
  const escaped = await postRaw(h, JSON.stringify({ ...LOGIN, note: 'a "quoted" \\ value', 'odd"key': '{"x":"y"}' }), { 'content-type': 'application/json' })
  t.equal(escaped.statusCode, 200, 'escaped quotes in keys and values are not mistaken for repeated keys')
  t.type((ok.json() as TokenBody).refresh_token, 'string')

  const verifies = countVerifies(h)
  const before = dbState(h)
  const refused: Array<[string, string]> = [
    ['array value', JSON.stringify({ ...LOGIN, username: ['alice'] })],
    ['object value', JSON.stringify({ ...LOGIN, username: { $ne: 'x' } })],
    ['number value', JSON.stringify({ ...LOGIN, password: 1234 })],
    ['boolean value', JSON.stringify({ ...LOGIN, password: true })],
    ['null value', JSON.stringify({ ...LOGIN, password: null })],
    ['top-level array', JSON.stringify([LOGIN])],
    ['top-level string', JSON.stringify('grant_type=password')],
    ['top-level null', 'null'],
    ['malformed', '{"grant_type":'],
    ['empty', ''],
    ['duplicate key', `{"grant_type":"refresh_token","client_id":"cli","username":"alice","password":${JSON.stringify(PASSWORD)},"grant_type":"password"}`],
    ['bracket syntax in a key', JSON.stringify({ ...LOGIN, 'username[$ne]': 'x' })],
    ['duplicate key with escapes', `{"grant_type":"password","client_id":"cli","username":"alice","password":${JSON.stringify(PASSWORD)},"a\\"b":"x\\"y","a\\"b":"z"}`],
    ['nested __proto__', `{"grant_type":"password","client_id":"cli","username":"alice","password":${JSON.stringify(PASSWORD)},"__proto__":{"admin":"true"}}`]
  ]
  for (const [label, payload] of refused) {
    assertErrorResponse(t, await postRaw(h, payload, { 'content-type': 'application/json' }), 400, 'invalid_request', label)
  }
  t.equal(verifies.n, 0, 'no refused JSON body reached argon2')
  t.equal(dbState(h), before, 'nothing changed in the database')
  t.equal(({} as Record<string, unknown>).admin, undefined, 'Object.prototype untouched')
})

t.test('body size: the limit holds, and over it is 400 invalid_request, not 413 or 500', async (t) => {
  const h = await build(t)
  const limit = h.app.tokenline.opts.bodyLimit
  const base = form(LOGIN) + '&pad='
  const exact = base + 'x'.repeat(limit - base.length)
  t.equal(Buffer.byteLength(exact), limit)
  t.equal((await postRaw(h, exact)).statusCode, 200, 'a body of exactly the limit is accepted')

  const verifies = countVerifies(h)
  const before = dbState(h)
  const cases: Array<[string, string, Record<string, string>]> = [
    ['limit + 1', exact + 'x', { 'content-type': FORM }],
    ['10 MiB form', base + 'x'.repeat(10 * 1024 * 1024), { 'content-type': FORM }],
    ['10 MiB JSON', JSON.stringify({ ...LOGIN, pad: 'x'.repeat(10 * 1024 * 1024) }), { 'content-type': 'application/json' }],
    ['10 MiB text/plain', 'x'.repeat(10 * 1024 * 1024), { 'content-type': 'text/plain' }],
    ['1 MiB password', form({ ...LOGIN, password: 'p'.repeat(1024 * 1024) }), { 'content-type': FORM }]
  ]
  for (const [label, payload, headers] of cases) {
    assertErrorResponse(t, await postRaw(h, payload, headers), 400, 'invalid_request', label)
  }
  t.equal(verifies.n, 0, 'an oversized body never reaches argon2')
  t.equal(dbState(h), before, 'nothing changed in the database')
})

t.test('an empty body, a repeated or bracketed parameter, bad percent-encoding or a parameter in the query string is invalid_request', async (t) => {
  const h = await build(t)
  const verifies = countVerifies(h)
  const before = dbState(h)
  const login = form(LOGIN)
  const cases: Array<[string, string, string?, RegExp?]> = [
    ['empty body', ''],
    ['only &', '&&&'],
    ['duplicate grant_type', login + '&grant_type=refresh_token', undefined, /twice/],
    ['duplicate username', login + '&username=bob', undefined, /twice/],
    ['duplicate client_id', login + '&client_id=cli', undefined, /twice/],
    ['duplicate refresh_token', 'grant_type=refresh_token&client_id=cli&refresh_token=a&refresh_token=b', undefined, /twice/],
    ['grant_type[]', 'grant_type[]=password&client_id=cli&username=alice&password=x'],
    ['username[]', 'grant_type=password&client_id=cli&username[]=a&username[]=b&password=x'],
    ['username[$ne]', `grant_type=password&client_id=cli&username[$ne]=x&password=${encodeURIComponent(PASSWORD)}`],
    ['__proto__[admin]', login + '&__proto__[admin]=true', undefined, /array/],
    ['constructor[prototype][admin]', login + '&constructor[prototype][admin]=true', undefined, /array/],
    ['%ZZ', 'grant_type=password&client_id=cli&username=%ZZ&password=x'],
    ['lone %', 'grant_type=password&client_id=cli&username=alice&password=%'],
    ['lone surrogate', 'grant_type=password&client_id=cli&username=%ED%A0%80&password=x'],
    ['overlong UTF-8', 'grant_type=password&client_id=cli&username=%C0%AF&password=x'],
    // A complete, valid login in the body does not make a query-string parameter acceptable.
    ['params in the query string', login, '/token?grant_type=password', /query/],
    ['password in the query string', login, `/token?password=${encodeURIComponent(PASSWORD)}`, /query/],
    ['refresh_token in the query string', login, `/token?refresh_token=${newRefreshToken()}`, /query/],
    ['client_secret in the query string', login, '/token?client_secret=svc-secret', /query/]
  ]
  for (const [label, payload, url, why] of cases) {
    const res = await postRaw(h, payload, { 'content-type': FORM }, url)
    const body = assertErrorResponse(t, res, 400, 'invalid_request', label)
    if (why !== undefined) t.match(body.error_description, why, `refused for the right reason (${label})`)
    t.notMatch(String(body.error_description ?? ''), /svc-secret|\$ne/, `no echo of the input (${label})`)
  }
  t.equal(verifies.n, 0, 'no malformed request reached argon2')
  t.equal(dbState(h), before, 'nothing changed in the database')
  t.equal(({} as Record<string, unknown>).admin, undefined, 'Object.prototype untouched')

  // No account name holds a control character (the CLI refuses them, and PostgreSQL cannot store a NUL):
  // a malformed parameter, refused before argon2 and before the store. In a password, a NUL is just a
  // character: it cannot match, and costs the same argon2 work as any miss.
  const nul = await postRaw(h, 'grant_type=password&client_id=cli&username=alice%00&password=' + encodeURIComponent(PASSWORD))
  t.match(assertErrorResponse(t, nul, 400, 'invalid_request', '%00 in username').error_description, /control characters/)
  const nulPw = await postRaw(h, 'grant_type=password&client_id=cli&username=alice&password=' + encodeURIComponent(PASSWORD) + '%00')
  t.equal(assertErrorResponse(t, nulPw, 400, 'invalid_grant', '%00 in password').reason, 'invalid_credentials')
  t.equal(dbState(h), before, 'failed logins start no session')
})

t.test('a missing, empty or unsupported grant_type is refused without being echoed', async (t) => {
  const h = await build(t)
  const verifies = countVerifies(h)
  const before = dbState(h)
  const creds = { client_id: 'cli', username: 'alice', password: PASSWORD }
  assertErrorResponse(t, await h.token(creds), 400, 'invalid_request', 'missing')
  // RFC 6749 §3.2: a parameter without a value is treated as omitted: missing, not unsupported.
  const empty = assertErrorResponse(t, await h.token({ grant_type: '', ...creds }), 400, 'invalid_request', 'empty')
  t.match(empty.error_description, /grant_type/)
  for (const g of ['PASSWORD', 'password ', 'client_credentials', 'authorization_code', 'implicit', 'urn:ietf:params:oauth:grant-type:jwt-bearer', 'g'.repeat(10 * 1024)]) {
    const body = assertErrorResponse(t, await h.token({ grant_type: g, ...creds }), 400, 'unsupported_grant_type', g.slice(0, 40))
    t.notMatch(String(body.error_description), /ggg|PASSWORD|jwt-bearer/, 'the value is not echoed')
  }
  t.equal(verifies.n, 0, 'no grant_type error reached argon2')
  t.equal(dbState(h), before, 'nothing changed in the database')
})

t.test('unknown parameters are ignored (RFC 6749 §3.2)', async (t) => {
  const h = await build(t)
  const res = await h.token({ ...LOGIN, foo: 'bar', admin: 'true', toString: '1', hasOwnProperty: '1', sub: 'mallory', aud: 'evil' })
  t.equal(res.statusCode, 200)
  const body = res.json() as TokenBody
  const payload = decodeJwt(body.access_token)
  t.equal(payload.foo, undefined)
  t.equal(payload.admin, undefined)
  t.not(payload.sub, 'mallory', 'sub is not taken from the request')
  t.equal(payload.aud, h.app.tokenline.opts.audience, 'aud is not taken from the request')
  t.equal(body.scope, 'read write', 'scope unchanged')
})

t.test('client authentication: Basic or the body, never both and never two different clients', async (t) => {
  const h = await build(t)
  // RFC 6749 Appendix B: the id and secret are form-urlencoded before they go into Basic.
  await h.addClient({ id: 'svc:1', secret: 's%cret:+x' })
  const password = { grant_type: 'password', username: 'alice', password: PASSWORD }

  t.test('accepted forms', async (t) => {
    const accepted = async (label: string, params: Record<string, string>, headers: Record<string, string> = {}): Promise<void> => {
      const res = await h.token(params, { headers })
      t.equal(res.statusCode, 200, label)
    }
    await accepted('Basic', password, { authorization: basicAuth('svc', 'svc-secret') })
    await accepted('Basic with a matching body client_id', { ...password, client_id: 'svc' }, { authorization: basicAuth('svc', 'svc-secret') })
    await accepted('client_secret in the body', { ...password, client_id: 'svc', client_secret: 'svc-secret' })
    // RFC 9110 §11.1: the scheme name is case-insensitive.
    await accepted('lowercase basic', password, { authorization: 'basic ' + Buffer.from('svc:svc-secret').toString('base64') })
    await accepted('Appendix B: percent-encoded : in the id and secret', password, { authorization: basicAuth('svc%3A1', 's%25cret%3A%2Bx') })
    await accepted('the same client in the body', { ...password, client_id: 'svc:1', client_secret: 's%cret:+x' })
  })

  t.test('refused', async (t) => {
    const verifies = countVerifies(h)
    const before = dbState(h)
    const cases: Array<[string, Record<string, string>, Record<string, string>, number, string]> = [
      ['Basic with bad base64', password, { authorization: 'Basic !!!' }, 400, 'invalid_request'],
      ['Basic with no colon', password, { authorization: 'Basic ' + Buffer.from('svc').toString('base64') }, 400, 'invalid_request'],
      ['Basic with an empty user', password, { authorization: basicAuth('', 'svc-secret') }, 400, 'invalid_request'],
      ['Basic with no credentials', password, { authorization: 'Basic' }, 400, 'invalid_request'],
      ['Basic with a bad percent-encoding', password, { authorization: basicAuth('svc%ZZ', 'x') }, 400, 'invalid_request'],
      ['Bearer on the token endpoint', password, { authorization: 'Bearer x' }, 400, 'invalid_request'],
      ['unencoded : in the id is read as the separator', password, { authorization: basicAuth('svc:1', 's%25cret%3A%2Bx') }, 401, 'invalid_client'],
      ['Basic and client_secret (two methods, RFC 6749 §2.3)', { ...password, client_secret: 'svc-secret' }, { authorization: basicAuth('svc', 'svc-secret') }, 400, 'invalid_request'],
      ['body client_id differs from Basic', { ...password, client_id: 'cli' }, { authorization: basicAuth('svc', 'svc-secret') }, 400, 'invalid_request'],
      ['unknown client via Basic', password, { authorization: basicAuth('nobody', 'x') }, 401, 'invalid_client'],
      ['wrong secret via Basic', password, { authorization: basicAuth('svc', 'wrong') }, 401, 'invalid_client'],
      ['public client via Basic with a secret', password, { authorization: basicAuth('cli', 'x') }, 401, 'invalid_client'],
      ['no client at all', password, {}, 400, 'invalid_request'],
      ['unknown client via body', { ...password, client_id: 'nobody' }, {}, 400, 'invalid_client'],
      ['client_id with ../', { ...password, client_id: '../cli' }, {}, 400, 'invalid_client'],
      ['client_id of 10 KB', { ...password, client_id: 'c'.repeat(10 * 1024) }, {}, 400, 'invalid_client'],
      ['wrong secret via body', { ...password, client_id: 'svc', client_secret: 'wrong' }, {}, 400, 'invalid_client'],
      ['confidential client without its secret', { ...password, client_id: 'svc' }, {}, 400, 'invalid_client'],
      ['public client sending a secret', { ...password, client_id: 'cli', client_secret: 'anything' }, {}, 400, 'invalid_client']
    ]
    for (const [label, params, headers, status, error] of cases) {
      const res = await h.token(params, { headers })
      assertErrorResponse(t, res, status, error, label)
      // RFC 6749 §5.2: WWW-Authenticate answers a failed Basic authentication, and only that.
      if (status === 401) t.match(res.headers['www-authenticate'], /^Basic\b/, `WWW-Authenticate: Basic (${label})`)
      else t.equal(res.headers['www-authenticate'], undefined, `no WWW-Authenticate on a 400 (${label})`)
    }
    t.equal(verifies.n, 0, 'no client-auth failure reached argon2')
    t.equal(dbState(h), before, 'nothing changed in the database')
  })
})

t.test('malformed, unknown and misdirected refresh tokens', async (t) => {
  const h = await build(t)
  await h.addClient({ id: 'other', scopes: 'read write' })
  const mine = await h.login()
  const theirs = await h.login({ client: 'other' })
  const rt = mine.refresh_token as string
  t.type(rt, 'string')
  const flip = (s: string, i: number): string => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1)

  const verifies = countVerifies(h)
  const before = dbState(h)
  /** A refresh presenting `value`, or no refresh_token at all. */
  const refreshRequest = (value: string | undefined, client = 'cli'): Promise<LightMyRequestResponse> => {
    const params: Record<string, string> = { grant_type: 'refresh_token', client_id: client }
    if (value !== undefined) params.refresh_token = value
    return h.token(params)
  }
  assertErrorResponse(t, await refreshRequest(undefined), 400, 'invalid_request', 'missing')
  assertErrorResponse(t, await refreshRequest(''), 400, 'invalid_request', 'empty')
  assertErrorResponse(t, await refreshRequest('   '), 400, ['invalid_request', 'invalid_grant'], 'whitespace')
  const cases: Array<[string, string]> = [
    ['10 KB', 'tlrt_' + 'a'.repeat(10 * 1024)],
    ['non-base64url characters', rt.slice(0, 10) + '+/=!' + rt.slice(14)],
    ['valid shape, random value', newRefreshToken()],
    ['one character flipped', flip(rt, 20)],
    ['checksum flipped', flip(rt, rt.length - 1)],
    ['truncated by one', rt.slice(0, -1)],
    ['one character appended', rt + 'A'],
    ['without its prefix', rt.slice(5)],
    ['an access token JWT', mine.access_token],
    ['surrounded by spaces', ` ${rt} `]
  ]
  for (const [label, value] of cases) {
    const body = assertErrorResponse(t, await refreshRequest(value), 400, 'invalid_grant', label)
    t.equal(body.reason, 'token_invalid', `reason token_invalid (${label})`)
  }
  // RFC 6749 §10.4: bound to the client it was issued to; the other client's attempt proves nothing
  // about who holds it, so the session is left alone.
  const other = assertErrorResponse(t, await refreshRequest(theirs.refresh_token, 'cli'), 400, 'invalid_grant', "another client's token")
  t.equal(other.reason, 'client_mismatch')
  t.equal(verifies.n, 0, 'refresh failures never touch argon2')
  t.equal(dbState(h), before, 'sessions and lineage unchanged: nothing consumed, nothing revoked')

  // Both tokens still work for their own clients.
  t.equal((await refreshRequest(rt)).statusCode, 200, 'the real token still refreshes')
  t.equal((await refreshRequest(theirs.refresh_token, 'other')).statusCode, 200, "the other client's token still refreshes")
})

t.test('every success and error carries no-store headers (RFC 6749 §5.1)', async (t) => {
  const h = await build(t)
  const ok = await h.token(LOGIN)
  t.equal(ok.statusCode, 200)
  t.equal(ok.headers['cache-control'], 'no-store')
  t.equal(ok.headers.pragma, 'no-cache')
  t.match(ok.headers['content-type'], /^application\/json; charset=utf-8/)
  const bad = await h.token({ ...LOGIN, password: 'wrong' })
  assertErrorResponse(t, bad, 400, 'invalid_grant')
})

/** Writes raw bytes to the server and collects everything it answers until it closes or goes quiet. */
async function raw (port: number, data: string | Buffer, opts: { halfClose?: boolean } = {}): Promise<string> {
  return await new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(data)
      if (opts.halfClose === true) socket.end()
    })
    let out = ''
    const done = (): void => { clearTimeout(timer); socket.destroy(); resolve(out) }
    const timer = setTimeout(done, 3000)
    socket.on('data', (d: Buffer) => { out += d.toString('latin1') })
    socket.on('close', done)
    socket.on('error', done)
  })
}

/** Splits a raw HTTP/1.1 response into status, lower-cased headers and body. */
function parseResponse (text: string): { status: number, headers: Record<string, string>, body: string } {
  const [head = '', ...rest] = text.split('\r\n\r\n')
  const [statusLine = '', ...lines] = head.split('\r\n')
  const headers: Record<string, string> = {}
  for (const l of lines) {
    const i = l.indexOf(':')
    headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim()
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: rest.join('\r\n\r\n') }
}

t.test('HTTP framing on a real socket (standalone server)', async (t) => {
  const app: FastifyInstance = await buildServer({ database: join(tempDir(t), 'tokenline.db'), argon2: CHEAP_ARGON2, logEvents: false }, { trustProxy: false, logLevel: 'silent' })
  t.teardown(() => app.close())
  await app.tokenline.store.createUser({ id: randomId(), username: 'alice', passwordHash: await createPasswords(CHEAP_ARGON2).hash(PASSWORD), now: Date.now() })
  await app.tokenline.store.createClient({ id: 'cli', secretDigest: null, delivery: 'body', grants: 'password refresh_token', scopes: '', origins: '', accessTtl: null, idleTtl: null, sessionTtl: null, now: Date.now() })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as { port: number }).port
  const login = form(LOGIN)
  const head = (extra: string): string => `POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${FORM}\r\n${extra}\r\n`
  const chunked = (body: string, chunk = 16): string => {
    let out = ''
    for (let i = 0; i < body.length; i += chunk) { const c = body.slice(i, i + chunk); out += `${c.length.toString(16)}\r\n${c}\r\n` }
    return out + '0\r\n\r\n'
  }

  // node-oidc-provider "can use transfer-encoding: chunked": no Content-Length, within the limit.
  const ok = parseResponse(await raw(port, head('Transfer-Encoding: chunked\r\nConnection: close\r\n') + chunked(login)))
  t.equal(ok.status, 200, 'a chunked login works')
  t.type((JSON.parse(ok.body) as TokenBody).access_token, 'string')

  /** A refused request: a controlled 4xx in RFC 6749 shape with no-store, or a closed connection; never a token. */
  const assertRawRefused = (label: string, text: string, opts: { mayBeSilent?: boolean } = {}): void => {
    t.notMatch(text, TOKENISH, `${label}: no token`)
    t.notMatch(text, /"statusCode"|"message"/, `${label}: not Fastify's error shape`)
    if (text === '' && opts.mayBeSilent === true) return
    const r = parseResponse(text)
    t.ok(r.status >= 400 && r.status < 500, `${label}: a 4xx (got ${r.status})`)
    t.equal((JSON.parse(r.body) as { error?: string }).error, 'invalid_request', `${label}: invalid_request`)
    t.match(r.headers['cache-control'], /no-store/, `${label}: no-store`)
    t.equal(r.headers.pragma, 'no-cache', `${label}: pragma no-cache`)
  }
  const limit = app.tokenline.opts.bodyLimit
  assertRawRefused('chunked over the limit', await raw(port, head('Transfer-Encoding: chunked\r\nConnection: close\r\n') + chunked(login + '&pad=' + 'x'.repeat(limit), 4096)))
  // Request smuggling (ASVS 5.0 4.2.1): both framings at once.
  assertRawRefused('Content-Length with Transfer-Encoding', await raw(port, head(`Content-Length: ${login.length}\r\nTransfer-Encoding: chunked\r\n`) + chunked(login)))
  assertRawRefused('a malformed chunk size', await raw(port, head('Transfer-Encoding: chunked\r\n') + 'zz\r\nabc\r\n'))
  assertRawRefused('a header name with a space', await raw(port, head('Bad Header: x\r\n')))
  assertRawRefused('Content-Length larger than the body', await raw(port, head('Content-Length: 1000\r\n') + login, { halfClose: true }), { mayBeSilent: true })
  assertRawRefused('Content-Length of 99999999', await raw(port, head('Content-Length: 99999999\r\nConnection: close\r\n') + 'abc'))
  // The rest of the body is read as a next request, which is garbage.
  const short = await raw(port, head('Content-Length: 10\r\n') + login)
  t.notMatch(short, TOKENISH, 'Content-Length shorter than the body: no token')
  t.notMatch(short, /^HTTP\/1\.1 5/m, 'Content-Length shorter than the body: no 5xx')
  t.notMatch(short, /"statusCode"/, "Content-Length shorter than the body: not Fastify's error shape")
  // A compressed body is neither inflated (no decompression bomb) nor read as if it were plain.
  const gz = gzipSync(login)
  assertRawRefused('Content-Encoding: gzip', await raw(port, Buffer.concat([Buffer.from(head(`Content-Encoding: gzip\r\nContent-Length: ${gz.length}\r\nConnection: close\r\n`)), gz])))
  assertRawRefused('Content-Encoding: gzip on a plain body', await raw(port, head(`Content-Encoding: gzip\r\nContent-Length: ${login.length}\r\nConnection: close\r\n`) + login))
  assertRawRefused('Content-Encoding: br', await raw(port, head(`Content-Encoding: br\r\nContent-Length: ${login.length}\r\nConnection: close\r\n`) + login))

  // The server is still healthy after all that.
  const again = parseResponse(await raw(port, head(`Content-Length: ${login.length}\r\nConnection: close\r\n`) + login))
  t.equal(again.status, 200, 'a normal login still works')
})
