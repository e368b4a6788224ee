/*
 * grant_type=password (RFC 6749 §4.3): the success response, scope, indistinguishable failures,
 * username and password handling, argon2id parameters and rehashing, and that neither the password
 * nor the refresh token ever lands in the database or the logs.
 */
import Database from 'better-sqlite3'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { decodeJwt } from 'jose'
import { basicAuth, build, countVerifies, form, ORIGIN, PASSWORD, SAME_ORIGIN, sidOf, type Harness, type TokenBody } from './helpers.js'
import { CHEAP_ARGON2_ENV, createDatabase, postForm, runCli, startServer, tempDir } from './processes.js'

const LOGIN = { grant_type: 'password', client_id: 'cli', username: 'alice' }

function userRow (h: Harness | string, username: string): { id: string, password_hash: string } {
  const db = new Database(typeof h === 'string' ? h : h.database, { readonly: true })
  try {
    return db.prepare('SELECT id, password_hash FROM users WHERE username = ?').get(username) as { id: string, password_hash: string }
  } finally {
    db.close()
  }
}

t.test('success: exactly the RFC 6749 §5.1 members, expires_in matching the JWT', async (t) => {
  const h = await build(t)
  const res = await h.token({ ...LOGIN, password: PASSWORD })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^application\/json; charset=utf-8/)
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(res.headers.pragma, 'no-cache')
  t.equal(res.headers['set-cookie'], undefined, 'a body client gets no cookie')
  const body = res.json() as TokenBody
  t.same(Object.keys(body).sort(), ['access_token', 'expires_in', 'refresh_token', 'scope', 'token_type'])
  t.equal(body.token_type, 'Bearer')
  t.ok(Number.isInteger(body.expires_in), 'expires_in is an integer')
  const payload = decodeJwt(body.access_token)
  t.equal(body.expires_in, (payload.exp as number) - (payload.iat as number), 'expires_in == exp - iat')
  t.equal(body.expires_in, 900, 'the default access token lifetime')
  t.equal(payload.iat, Math.floor(h.clock.now() / 1000), 'iat from the injected clock')
  t.equal(body.scope, 'read write')
  t.match(body.refresh_token, /^tlrt_[A-Za-z0-9_-]{49}$/)

  // A cookie client never sees its refresh token in JSON (ASVS 5.0 3.3.4).
  const web = await h.token({ ...LOGIN, client_id: 'web', password: PASSWORD })
  t.equal(web.statusCode, 200)
  t.same(Object.keys(web.json()).sort(), ['access_token', 'expires_in', 'scope', 'token_type'])
  t.match(String(web.headers['set-cookie']), /^__Secure-tokenline-rt=tlrt_/)

  // A per-client access lifetime shows in both expires_in and the JWT.
  await h.addClient({ id: 'short', accessTtl: 60 })
  const short = await h.login({ client: 'short' })
  const p2 = decodeJwt(short.access_token)
  t.equal(short.expires_in, 60)
  t.equal((p2.exp as number) - (p2.iat as number), 60)
})

t.test('scope: all the client may have unless asked, a subset on request, anything else invalid_scope', async (t) => {
  const h = await build(t)
  const scoped = async (scope: string): Promise<{ status: number, body: TokenBody }> => {
    const res = await h.token({ ...LOGIN, password: PASSWORD, scope })
    return { status: res.statusCode, body: res.json() as TokenBody }
  }
  const def = await h.login()
  t.equal(def.scope, 'read write', 'no scope requested: all the client may have')
  t.equal(decodeJwt(def.access_token).scope, 'read write')

  const read = await scoped('read')
  t.equal(read.status, 200)
  t.equal(read.body.scope, 'read')
  t.equal(decodeJwt(read.body.access_token).scope, 'read', 'the JWT carries the granted scope')
  t.same((await scoped('write read')).body.scope.split(' ').sort(), ['read', 'write'])
  t.equal((await scoped('read read')).body.scope, 'read', 'duplicates collapse')
  t.equal((await scoped('')).body.scope, 'read write', 'an empty scope counts as omitted (RFC 6749 §3.2)')

  for (const bad of ['admin', 'read admin', 'READ', 'read\\', 'a"b', 'x'.repeat(200)]) {
    const r = await scoped(bad)
    t.equal(r.status, 400, `refused: ${bad.slice(0, 20)}`)
    t.equal(r.body.error, 'invalid_scope')
    t.equal(r.body.access_token, undefined)
  }
  // A client configured with no scopes gets an empty scope, and may ask for none.
  const svc = await h.token({ ...LOGIN, client_id: 'svc', client_secret: 'svc-secret', password: PASSWORD })
  t.equal(svc.statusCode, 200)
  t.equal((svc.json() as TokenBody).scope, '')
  const svcAsk = await h.token({ ...LOGIN, client_id: 'svc', client_secret: 'svc-secret', password: PASSWORD, scope: 'read' })
  t.equal((svcAsk.json() as TokenBody).error, 'invalid_scope')
})

t.test('unknown user, wrong password and disabled user are indistinguishable', async (t) => {
  const h = await build(t)
  const carolId = await h.addUser('carol')
  await h.app.tokenline.store.setUserDisabled({ userId: carolId, disabled: true, now: h.clock.now(), events: [] })
  const verifies = countVerifies(h)
  const attempts = {
    unknown: await h.token({ ...LOGIN, username: 'nobody', password: PASSWORD }),
    wrongPassword: await h.token({ ...LOGIN, password: PASSWORD + '!' }),
    disabled: await h.token({ ...LOGIN, username: 'carol', password: PASSWORD }),
    disabledWrongPassword: await h.token({ ...LOGIN, username: 'carol', password: 'nope' })
  }
  const strip = (headers: Record<string, unknown>): Record<string, unknown> => {
    const { date: _date, ...rest } = headers
    return rest
  }
  const ref = attempts.wrongPassword
  t.equal(ref.statusCode, 400)
  t.same(ref.json(), { error: 'invalid_grant', error_description: 'invalid username or password', reason: 'invalid_credentials' })
  for (const [name, res] of Object.entries(attempts)) {
    t.equal(res.statusCode, ref.statusCode, `${name}: same status`)
    t.equal(res.body, ref.body, `${name}: byte-identical body`)
    t.same(strip(res.headers), strip(ref.headers), `${name}: same headers`)
  }
  // OWASP Authentication CS: no quick exit, every path pays for one argon2 verification.
  t.equal(verifies.n, 4, 'each failure ran argon2 once')
  t.equal((await h.token({ ...LOGIN, username: 'carol', password: PASSWORD })).statusCode, 400)
})

t.test('username normalisation: trimmed and case-folded, the same user', async (t) => {
  const h = await build(t)
  const alice = (await h.app.tokenline.store.findUserByUsername('alice'))?.id
  for (const username of ['alice', 'Alice ', 'ALICE', '  aLiCe\t']) {
    const res = await h.token({ ...LOGIN, username, password: PASSWORD })
    t.equal(res.statusCode, 200, JSON.stringify(username))
    t.equal(decodeJwt((res.json() as TokenBody).access_token).sub, alice, `${JSON.stringify(username)} is alice`)
  }
  for (const username of ['', '   ']) {
    const res = await h.token({ ...LOGIN, username, password: PASSWORD })
    t.equal((res.json() as TokenBody).error, 'invalid_request', `empty username ${JSON.stringify(username)} is missing`)
  }
  const long = await h.token({ ...LOGIN, username: 'a'.repeat(300), password: PASSWORD })
  t.equal(long.statusCode, 400)
  t.equal((long.json() as TokenBody).reason, 'invalid_credentials', 'an over-long username is just a miss')
  // No account has one (the CLI refuses them) and PostgreSQL cannot store NUL: refused, nothing recorded.
  const before = (await h.app.tokenline.store.listEvents({})).length
  for (const username of ['al\u0000ice', 'alice\u0001', 'a\u007fb']) {
    const res = await h.token({ ...LOGIN, username, password: PASSWORD })
    t.same([res.statusCode, (res.json() as TokenBody).error], [400, 'invalid_request'], `control character in ${JSON.stringify(username)}`)
  }
  t.equal((await h.app.tokenline.store.listEvents({})).length, before, 'no failure recorded under such a name')
})

t.test('passwords: verified exactly as received, long ones work, huge ones refused before hashing', async (t) => {
  const h = await build(t)
  const p64 = 'a1!'.repeat(21) + 'z'
  const p128 = randomBytes(96).toString('base64')
  const p1024 = 'p'.repeat(1024)
  await h.addUser('u64', p64)
  await h.addUser('u128', p128)
  await h.addUser('u1024', p1024)
  await h.addUser('spaces', 'trailing space ')
  await h.addUser('nfc', 'p\u00e4ssw\u00f6rd-long')
  t.equal(p64.length, 64)
  t.equal(p128.length, 128)
  t.equal((await h.login({ username: 'u64', password: p64 })).token_type, 'Bearer', '64 characters')
  t.equal((await h.login({ username: 'u128', password: p128 })).token_type, 'Bearer', '128 characters')
  t.equal((await h.login({ username: 'u1024', password: p1024 })).token_type, 'Bearer', '1024 characters, the maximum')
  t.equal((await h.login({ username: 'u128', password: p128.slice(0, 72) })).error, 'invalid_grant', 'no truncation')
  t.equal((await h.login({ username: 'spaces', password: 'trailing space ' })).token_type, 'Bearer')
  t.equal((await h.login({ username: 'spaces', password: 'trailing space' })).error, 'invalid_grant', 'trailing spaces are significant')
  t.equal((await h.login({ username: 'nfc', password: 'pa\u0308ssw\u00f6rd-long' })).error, 'invalid_grant', 'no Unicode normalisation of passwords')
  t.equal((await h.login({ username: 'alice', password: PASSWORD.toUpperCase() })).error, 'invalid_grant', 'no case folding of passwords')

  const verifies = countVerifies(h)
  const huge = await h.token({ ...LOGIN, username: 'u1024', password: p1024 + 'p' })
  t.equal(huge.statusCode, 400)
  t.equal((huge.json() as TokenBody).error, 'invalid_request')
  t.equal(verifies.n, 0, 'a 1025-character password never reaches argon2')
  const missing: Array<Record<string, string>> = [{ ...LOGIN }, { ...LOGIN, password: '' }, { grant_type: 'password', client_id: 'cli', password: PASSWORD }]
  for (const params of missing) {
    const res = await h.token(params)
    t.equal((res.json() as TokenBody).error, 'invalid_request', `missing parameter: ${form(params)}`)
  }
  t.equal(verifies.n, 0, 'missing parameters never reach argon2')
})

t.test('unauthorized_client for a client without the password grant', async (t) => {
  const h = await build(t)
  await h.addClient({ id: 'refresher', grants: 'refresh_token' })
  const verifies = countVerifies(h)
  const res = await h.token({ ...LOGIN, client_id: 'refresher', password: PASSWORD })
  t.equal(res.statusCode, 400)
  t.equal((res.json() as TokenBody).error, 'unauthorized_client')
  t.equal(verifies.n, 0, 'refused before any password work')
})

t.test('hashes are re-made with the configured parameters on the next successful login', async (t) => {
  // The harness seeds alice with m=1024,t=1,p=1; this server is configured with m=2048,t=2.
  const h = await build(t, { argon2: { memoryCost: 2048, timeCost: 2, parallelism: 1 } })
  const before = userRow(h, 'alice').password_hash
  t.match(before, /^\$argon2id\$v=19\$m=1024,t=1,p=1\$/)
  t.equal((await h.token({ ...LOGIN, password: 'wrong' })).statusCode, 400)
  t.equal(userRow(h, 'alice').password_hash, before, 'a failed login changes nothing')

  t.equal((await h.login()).token_type, 'Bearer')
  const after = userRow(h, 'alice').password_hash
  t.match(after, /^\$argon2id\$v=19\$m=2048,t=2,p=1\$/, 'upgraded to the configured parameters')
  const events = await h.app.tokenline.store.listEvents({ userId: userRow(h, 'alice').id })
  t.ok(events.some((e) => e.type === 'password_rehashed'), 'the upgrade is recorded')

  t.equal((await h.login()).token_type, 'Bearer', 'the same password still works')
  t.equal(userRow(h, 'alice').password_hash, after, 'no second rehash once current')
})

t.test('production argon2id parameters: a user created by the CLI with default settings', async (t) => {
  const dir = tempDir(t)
  const db = await createDatabase(join(dir, 'prod.db'))
  const add = async (name: string): Promise<void> => {
    const r = await runCli(['user', 'add', name], { env: { TOKENLINE_DB: db }, input: 'a perfectly fine password\n' })
    t.equal(r.code, 0, r.stderr)
  }
  await add('alice')
  await add('bob')
  const a = userRow(db, 'alice').password_hash
  const b = userRow(db, 'bob').password_hash
  // OWASP Password Storage CS: argon2id, m=19 MiB, t=2, p=1.
  t.match(a, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22,}\$[A-Za-z0-9+/]{43,}$/)
  t.match(b, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/)
  const salt = (hash: string): string | undefined => hash.split('$')[4]
  t.ok((salt(a)?.length ?? 0) >= 22, 'a salt of at least 128 bits')
  t.not(salt(a), salt(b), 'salts are unique per user, even for the same password')
})

t.test('canary: neither the password nor the refresh token reaches the database, the WAL or the logs', async (t) => {
  const dir = tempDir(t)
  const db = await createDatabase(join(dir, 'canary.db'))
  const canary = 'CANARY-' + randomBytes(12).toString('hex')
  const cli = await runCli(['user', 'add', 'alice'], { env: { TOKENLINE_DB: db, ...CHEAP_ARGON2_ENV }, input: canary + '\n' })
  t.equal(cli.code, 0, cli.stderr)
  t.notMatch(cli.stdout + cli.stderr, canary, 'the CLI does not echo the password')
  await runCli(['client', 'add', 'cli', '--delivery', 'body'], { env: { TOKENLINE_DB: db } })

  // The most verbose log level the server has, so nothing is filtered out before we look.
  const server = await startServer(t, { TOKENLINE_DB: db, TOKENLINE_LOG_LEVEL: 'trace', ...CHEAP_ARGON2_ENV })
  const token = `${server.url}/token`
  const login = await postForm(token, { grant_type: 'password', client_id: 'cli', username: 'alice', password: canary })
  t.equal(login.status, 200)
  const rt1 = login.body.refresh_token as string
  const refreshed = await postForm(token, { grant_type: 'refresh_token', client_id: 'cli', refresh_token: rt1 })
  t.equal(refreshed.status, 200)
  const rt2 = refreshed.body.refresh_token as string
  // Failures and misplaced secrets are where they tend to leak.
  t.equal((await postForm(token, { grant_type: 'password', client_id: 'cli', username: canary, password: canary + 'x' })).status, 400)
  t.equal((await postForm(`${token}?password=${canary}`, { grant_type: 'password', client_id: 'cli', username: 'alice' })).status, 400)
  t.equal((await postForm(token, { grant_type: 'refresh_token', client_id: 'cli', refresh_token: rt1 + 'x' })).status, 400)
  t.equal((await postForm(token, { grant_type: 'password', username: 'alice', password: canary }, { authorization: basicAuth('cli', canary) })).status, 401)

  const files = [db, db + '-wal'].filter((f) => existsSync(f))
  t.ok(files.includes(db + '-wal'), 'the WAL file exists while the server runs')
  const secrets = { password: canary, 'first refresh token': rt1, 'second refresh token': rt2 }
  const scan = (label: string): void => {
    for (const f of [db, db + '-wal'].filter((f) => existsSync(f))) {
      const bytes = readFileSync(f)
      for (const [name, s] of Object.entries(secrets)) t.equal(bytes.indexOf(s), -1, `${name} not in ${f.slice(dir.length + 1)} (${label})`)
    }
  }
  scan('while running')
  t.ok(server.output().includes('security event login_succeeded'), 'the log was captured')
  for (const [name, s] of Object.entries(secrets)) t.notOk(server.output().includes(s), `${name} not in the log`)
  await server.stop()
  scan('after shutdown')
  for (const [name, s] of Object.entries(secrets)) t.notOk(server.output().includes(s), `${name} not in the log at shutdown`)

  // Only the SHA-256 digests of refresh tokens are stored.
  const conn = new Database(db, { readonly: true })
  t.teardown(() => conn.close())
  const digests = new Set((conn.prepare('SELECT hex(digest) AS d FROM refresh_tokens').all() as Array<{ d: string }>).map((r) => r.d.toLowerCase()))
  t.equal(digests.size, 2)
  for (const rt of [rt1, rt2]) t.ok(digests.has(createHash('sha256').update(rt).digest('hex')), 'the digest is what is stored')
})

t.test('a client allowed only the password grant gets no refresh token; its session still exists and can be ended', async (t) => {
  const h = await build(t)
  await h.addClient({ id: 'pw-only', grants: 'password' })
  await h.addClient({ id: 'pw-only-web', grants: 'password', delivery: 'both', origins: ORIGIN })

  const body = await h.token({ ...LOGIN, client_id: 'pw-only', password: PASSWORD })
  t.equal(body.statusCode, 200)
  t.same(Object.keys(body.json()).sort(), ['access_token', 'expires_in', 'scope', 'token_type'], 'no refresh_token in the body')
  t.equal(body.headers['set-cookie'], undefined, 'and no cookie')

  const both = await h.token({ ...LOGIN, client_id: 'pw-only-web', password: PASSWORD }, { headers: SAME_ORIGIN })
  t.equal(both.statusCode, 200)
  t.notOk('refresh_token' in both.json(), 'a `both` client: nothing in the body')
  t.equal(both.headers['set-cookie'], undefined, 'nothing in a cookie')

  // The access token's session exists: listed by the sessions API, and ending it refuses the token.
  const access = (body.json() as TokenBody).access_token
  const sid = sidOf(access)
  t.ok(await h.app.tokenline.store.findSession(sid), 'the session of the access token\'s sid exists')
  const bearer = { authorization: `Bearer ${access}` }
  const list = await h.app.inject({ method: 'GET', url: '/sessions', headers: bearer })
  t.equal(list.statusCode, 200)
  t.ok((list.json() as { sessions: Array<{ id: string }> }).sessions.some((s) => s.id === sid), 'GET /sessions lists it')
  t.equal((await h.app.inject({ method: 'DELETE', url: `/sessions/${sid}`, headers: bearer })).statusCode, 204, 'it can be ended')
  t.equal((await h.app.inject({ method: 'GET', url: '/sessions', headers: bearer })).statusCode, 401, 'and its access token is refused from then on')

  // The body client still gets both: the refresh_token grant is what decides.
  t.match((await h.login()).refresh_token, /^tlrt_/)
})
