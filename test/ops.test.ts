import Database from 'better-sqlite3'
import { join } from 'node:path'
import t from 'tap'
import { latestMigration } from '../db/sqlite/database.js'
import { SETTINGS } from '../server/options.js'
import { basicAuth, build, PASSWORD, type Harness } from './helpers.js'
import { addAliceAndCli, postForm, runCli, startServer } from './processes.js'
import { COOKIE_NAME, refreshCookie } from './set-cookie.js'

/*
 * Operations: GET /healthz, GET /metrics (Prometheus text exposition 0.0.4), and a log that never
 * carries a credential.
 */

interface Sample { name: string, labels: Record<string, string>, value: number }

/**
 * A strict reader of the Prometheus text format: every line is a HELP, a TYPE or a sample; every sample
 * belongs to a family declared with TYPE; label values are quoted and escaped. Throws on anything else.
 */
function parseExposition (text: string): { samples: Sample[], types: Map<string, string> } {
  const types = new Map<string, string>()
  const samples: Sample[] = []
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline')
  for (const line of text.slice(0, -1).split('\n')) {
    if (line === '') continue
    let m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line)
    if (m !== null) {
      if (m[1] === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3] ?? '')) throw new Error(`bad TYPE: ${line}`)
        types.set(m[2] as string, m[3] as string)
      }
      continue
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$/.exec(line)
    if (m === null) throw new Error(`not a sample line: ${line}`)
    const labels: Record<string, string> = {}
    const rawLabels = m[2] ?? ''
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/gy
    let consumed = 0
    for (let l = re.exec(rawLabels); l !== null; l = re.exec(rawLabels)) {
      labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))
      consumed = re.lastIndex
      if (consumed === rawLabels.length) break
    }
    if (consumed !== rawLabels.length) throw new Error(`bad labels: ${line}`)
    const name = m[1] as string
    const family = name.replace(/_(bucket|sum|count)$/, '')
    if (!types.has(name) && !types.has(family)) throw new Error(`sample without TYPE: ${line}`)
    samples.push({ name, labels, value: Number(m[3]) })
  }
  return { samples, types }
}

async function metrics (h: Harness): Promise<{ samples: Sample[], types: Map<string, string>, value: (name: string, labels?: Record<string, string>) => number }> {
  const res = await h.app.inject({ method: 'GET', url: '/metrics' })
  if (res.statusCode !== 200) throw new Error(`metrics: ${res.statusCode} ${res.body}`)
  const parsed = parseExposition(res.body)
  const value = (name: string, labels: Record<string, string> = {}): number => {
    const s = parsed.samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))
    return s?.value ?? 0
  }
  return { ...parsed, value }
}

t.test('GET /healthz: 200 when the database answers and its schema is current', async (t) => {
  const h = await build(t)
  const res = await h.app.inject({ method: 'GET', url: '/healthz' })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { status: 'ok', database: 'ok', migrations: { applied: latestMigration(), expected: latestMigration() } })
  t.equal(res.headers['cache-control'], 'no-store')
})

t.test('GET /healthz: 503 when the database is closed', async (t) => {
  const h = await build(t)
  h.app.tokenline.store.close()
  const res = await h.app.inject({ method: 'GET', url: '/healthz' })
  t.equal(res.statusCode, 503)
  t.same(res.json(), { status: 'error', database: 'unreachable' })
})

t.test('GET /healthz: 503 when the schema is not the one this version expects', async (t) => {
  const h = await build(t)
  // Another process (a newer tokenline) migrated the file further.
  const other = new Database(h.database)
  other.pragma(`user_version = ${latestMigration() + 1}`)
  other.close()
  const res = await h.app.inject({ method: 'GET', url: '/healthz' })
  t.equal(res.statusCode, 503)
  t.match(res.json(), { status: 'error', database: 'ok', migrations: { applied: latestMigration() + 1, expected: latestMigration() } })
})

t.test('GET /metrics: valid exposition; counters move with logins, refreshes and reuse', async (t) => {
  const h = await build(t)
  const res = await h.app.inject({ method: 'GET', url: '/metrics' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  const m0 = parseExposition(res.body)
  t.equal(m0.types.get('tokenline_token_requests_total'), 'counter')
  t.equal(m0.types.get('tokenline_token_request_duration_seconds'), 'histogram')
  t.equal(m0.types.get('tokenline_reuse_detections_total'), 'counter')
  t.equal(m0.types.get('tokenline_live_sessions'), 'gauge')
  t.equal(m0.types.get('tokenline_throttled_requests_total'), 'counter')

  const login = await h.login()
  const r1 = await h.refresh(login.refresh_token as string)
  t.equal(r1.status, 200)
  let m = await metrics(h)
  t.equal(m.value('tokenline_token_requests_total', { grant_type: 'password', outcome: 'ok' }), 1, 'one login')
  t.equal(m.value('tokenline_token_requests_total', { grant_type: 'refresh_token', outcome: 'ok' }), 1, 'one refresh')
  t.equal(m.value('tokenline_token_request_duration_seconds_count', { grant_type: 'password' }), 1, 'latency observed')
  t.equal(m.value('tokenline_token_request_duration_seconds_bucket', { grant_type: 'refresh_token', le: '+Inf' }), 1)
  t.equal(m.value('tokenline_live_sessions'), 1, 'one live session')
  t.equal(m.value('tokenline_reuse_detections_total'), 0)

  // Replaying the consumed token outside the grace window is reuse: the session is revoked.
  h.clock.advance(60)
  const replay = await h.refresh(login.refresh_token as string)
  t.equal(replay.body.reason, 'reuse_detected')
  const bad = await h.token({ grant_type: 'password', client_id: 'cli', username: 'alice', password: 'wrong' })
  t.equal(bad.statusCode, 400)
  m = await metrics(h)
  t.equal(m.value('tokenline_reuse_detections_total'), 1, 'reuse counted once')
  t.equal(m.value('tokenline_security_events_total', { type: 'reuse_detected' }), 1)
  t.equal(m.value('tokenline_token_requests_total', { grant_type: 'refresh_token', outcome: 'invalid_grant', reason: 'reuse_detected' }), 1)
  t.equal(m.value('tokenline_token_requests_total', { grant_type: 'password', outcome: 'invalid_grant', reason: 'invalid_credentials' }), 1)
  t.equal(m.value('tokenline_live_sessions'), 0, 'the revoked session is no longer live')

  const garbage = await h.app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'text/plain' }, payload: 'x' })
  t.equal(garbage.statusCode, 400)
  m = await metrics(h)
  t.equal(m.value('tokenline_token_requests_total', { grant_type: 'none', outcome: 'invalid_request' }), 1, 'unparseable requests are counted too')
})

t.test('GET /metrics counts throttled requests', { skip: SETTINGS.some((s) => s.key === 'throttlePassword') ? false : 'no password throttle setting yet' }, async (t) => {
  const h = await build(t, { throttlePassword: 1 } as never)
  await h.login()
  const second = await h.token({ grant_type: 'password', client_id: 'cli', username: 'alice', password: PASSWORD })
  t.equal(second.statusCode, 429)
  const m = await metrics(h)
  t.equal(m.value('tokenline_throttled_requests_total', { status: '429' }), 1)
})

t.test('GET /metrics with TOKENLINE_METRICS_TOKEN: bearer token required, compared exactly', async (t) => {
  const token = 'metrics-scrape-token-0123456789'
  const h = await build(t, { metricsToken: token })
  const none = await h.app.inject({ method: 'GET', url: '/metrics' })
  t.equal(none.statusCode, 401)
  t.equal(none.headers['www-authenticate'], 'Bearer realm="tokenline"')
  t.notMatch(none.body, /tokenline_/, 'no metrics without the token')
  const wrong = await h.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${token}x` } })
  t.equal(wrong.statusCode, 401)
  t.match(wrong.headers['www-authenticate'], /error="invalid_token"/)
  const basic = await h.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: basicAuth('x', token) } })
  t.equal(basic.statusCode, 401)
  const right = await h.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${token}` } })
  t.equal(right.statusCode, 200)
  t.match(right.body, /tokenline_live_sessions/)
  const health = await h.app.inject({ method: 'GET', url: '/healthz' })
  t.equal(health.statusCode, 200, '/healthz needs no token')
})

t.test('the server log never carries a token, password, secret, cookie or Authorization value', async (t) => {
  const dir = t.testdir({})
  const env = {
    TOKENLINE_DB: join(dir, 'tokenline.db'),
    TOKENLINE_ARGON2_MEMORY: '1024',
    TOKENLINE_ARGON2_TIME: '1',
    // trace: the most Fastify and Tokenline ever log.
    TOKENLINE_LOG_LEVEL: 'trace',
    TOKENLINE_METRICS_TOKEN: 'canary-metrics-token-7f3a9c'
  }
  const password = 'canary-password-8d2e4b'
  await addAliceAndCli(t, env, password)
  const svc = await runCli(['client', 'add', 'svc', '--confidential'], { env })
  const secret = /tlcs_[A-Za-z0-9_-]+/.exec(svc.stdout)?.[0]
  t.ok(secret, 'confidential client secret printed once')
  const server = await startServer(t, env)
  const canaries: Record<string, string> = { password, secret: secret as string, metricsToken: env.TOKENLINE_METRICS_TOKEN }

  type Tokens = { access_token: string, refresh_token: string }
  const token = `${server.url}/token`

  // Password grant (body delivery), then a refresh with the token in the body.
  const login = (await postForm<Tokens>(token, { grant_type: 'password', client_id: 'cli', username: 'alice', password })).body
  canaries.at1 = login.access_token
  canaries.rt1 = login.refresh_token
  const refreshed = (await postForm<Tokens>(token, { grant_type: 'refresh_token', client_id: 'cli', refresh_token: login.refresh_token })).body
  canaries.at2 = refreshed.access_token
  canaries.rt2 = refreshed.refresh_token

  // The cookie client `web` (created on first start): the refresh token travels in Set-Cookie / Cookie.
  const web = await postForm(token, { grant_type: 'password', client_id: 'web', username: 'alice', password })
  const cookie = refreshCookie(web.res)?.value
  t.ok(cookie, 'cookie login')
  canaries.cookie = cookie as string
  const viaCookie = await postForm(token, { grant_type: 'refresh_token', client_id: 'web' }, { cookie: `${COOKIE_NAME}=${cookie as string}` })
  t.equal(viaCookie.status, 200, 'cookie refresh')
  canaries.cookie2 = refreshCookie(viaCookie.res)?.value as string

  // Basic authentication: a wrong secret (401), then the right one; and the secret in the body.
  const wrongBasic = Buffer.from(`svc:${secret as string}-wrong`).toString('base64')
  canaries.wrongBasic = wrongBasic
  t.equal((await postForm(token, { grant_type: 'password', username: 'alice', password }, { authorization: `Basic ${wrongBasic}` })).status, 401)
  const rightBasic = Buffer.from(`svc:${secret as string}`).toString('base64')
  canaries.rightBasic = rightBasic
  await postForm(token, { grant_type: 'password', username: 'alice', password }, { authorization: `Basic ${rightBasic}` })
  await postForm(token, { grant_type: 'password', client_id: 'svc', client_secret: secret as string, username: 'alice', password: `${password}-typo` })

  // A token put in the query string by mistake, a bearer call to the sessions API, a logout, metrics.
  await fetch(`${server.url}/token?refresh_token=${refreshed.refresh_token}&password=${password}`, { method: 'POST' })
  await fetch(`${server.url}/sessions`, { headers: { authorization: `Bearer ${refreshed.access_token}` } })
  await postForm(`${server.url}/token/revoke`, { token: refreshed.refresh_token, client_id: 'cli' })
  await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${env.TOKENLINE_METRICS_TOKEN}` } })

  await server.stop()
  const log = server.output()
  t.match(log, /"url":"\/token"/, 'requests were logged (trace)')
  t.match(log, /security event login_succeeded/, 'security events were logged')
  for (const [name, value] of Object.entries(canaries)) {
    t.ok(value.length >= 16, `${name} canary is long enough to be unambiguous`)
    t.notOk(log.includes(value), `the log never contains the ${name}`)
    // Also the tail (a JWT's signature, a refresh token's random part), in case a line cut the value.
    t.notOk(log.includes(value.slice(-20)), `the log never contains the end of the ${name}`)
  }
  t.notMatch(log, /"authorization":"(Basic|Bearer) /i, 'no Authorization header value')
  t.notMatch(log, /"cookie":"__Secure/i, 'no Cookie header value')
})
