import Fastify from 'fastify'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import t, { type Test } from 'tap'
import tokenline from '../server/plugin.js'
import { build, CHEAP_ARGON2, PASSWORD, requestsTo, sidOf, TestClock, type Harness } from './helpers.js'
import { tokenline as cli } from './session-helpers.js'

/*
 * The audit trail and the forensics commands: a session that went through rotation, a grace replay
 * and a reuse detection, read back with the real CLI (`tokenline lineage`, `events`, `sessions`) from
 * the database file the server wrote, compared line by line with what an operator should see.
 */

/** Every request comes from curl unless it says otherwise. */
const CURL = { headers: { 'user-agent': 'curl/8.5.0' } }
const EVIL_IP = '203.0.113.66'
const EVIL_UA = 'evil/1.0'
/** The attacker replaying a token, from its own address and user agent. */
const EVIL = { headers: { 'user-agent': EVIL_UA }, ip: EVIL_IP }

/**
 * login (t=0) -> rotate to gen 1 (t=60) -> the same gen 0 again 2 s later, inside the grace window:
 * gen 1 handed out again (t=62) -> rotate to gen 2 (t=120) -> an attacker replays gen 0 (t=180):
 * reuse detected, session revoked.
 */
async function breachedSession (t: Test, { app, clock }: Pick<Harness, 'app' | 'clock'>): Promise<string> {
  const { login, refresh } = requestsTo(app)
  const gen0 = await login(CURL)
  const rt0 = gen0.refresh_token as string
  clock.advance(60)
  const gen1 = (await refresh(rt0, CURL)).body
  clock.advance(2)
  t.equal((await refresh(rt0, CURL)).body.refresh_token, gen1.refresh_token, 'grace replay: the same successor')
  clock.advance(58)
  const gen2 = (await refresh(gen1.refresh_token as string, CURL)).body
  t.type(gen2.refresh_token, 'string')
  clock.advance(60)
  t.equal((await refresh(rt0, EVIL)).body.reason, 'reuse_detected')
  return sidOf(gen0)
}

t.test('lineage and events of a session with a rotation, a grace replay and a reuse detection', async (t) => {
  const h = await build(t, { reuseGrace: 10 })
  const sid = await breachedSession(t, h)
  const uid = (await h.app.tokenline.store.findUserByUsername('alice'))?.id as string

  const lineage = await cli(h.database, ['lineage', sid])
  t.equal(lineage.code, 0, lineage.stderr)
  t.equal(lineage.stderr, '')
  t.equal(lineage.stdout, [
    `session ${sid}`,
    `  user      alice (${uid})`,
    '  client    cli, scope "read write"',
    '  created   2026-01-01T00:00:00Z, last used 2026-01-01T00:02:00Z',
    '  expires   2026-01-31T00:00:00Z (idle: 2026-01-08T00:02:00Z)',
    '  status    REVOKED at 2026-01-01T00:03:00Z: reuse_detected',
    '  bound to  ip 127.0.0.1, device -, ua curl/8.5.0',
    '',
    '  gen 0  issued 2026-01-01T00:00:00Z  127.0.0.1        curl/8.5.0  (login)',
    '  |      used   2026-01-01T00:01:00Z  127.0.0.1        curl/8.5.0',
    '  |      ~ GRACE REPLAY  2026-01-01T00:01:02Z  127.0.0.1        curl/8.5.0  -> gen 1 handed out again',
    '  |      ! REUSE         2026-01-01T00:03:00Z  203.0.113.66     evil/1.0  -> gen 0 replayed while gen 2 was live',
    '  gen 1  issued 2026-01-01T00:01:00Z  127.0.0.1        curl/8.5.0',
    '  |      used   2026-01-01T00:02:00Z  127.0.0.1        curl/8.5.0',
    '  gen 2  issued 2026-01-01T00:02:00Z  127.0.0.1        curl/8.5.0',
    '         never used: ended with the session',
    '  x REVOKED  2026-01-01T00:03:00Z  203.0.113.66     evil/1.0  -> reuse_detected',
    ''
  ].join('\n'), 'the token chain, with the replay and the reuse on the generation that was presented')

  const s = sid
  const events = await cli(h.database, ['events', '--user', 'alice'])
  t.equal(events.code, 0, events.stderr)
  t.equal(events.stdout, [
    'TIME                  TYPE              USER   SESSION                 CLIENT  IP            REASON          DETAIL',
    `2026-01-01T00:00:00Z  login_succeeded   alice  ${s}  cli     127.0.0.1     -               -`,
    `2026-01-01T00:01:00Z  token_rotated     alice  ${s}  cli     127.0.0.1     -               generation=1`,
    `2026-01-01T00:01:02Z  refresh_replayed  alice  ${s}  cli     127.0.0.1     -               replayed=0 live=1`,
    `2026-01-01T00:02:00Z  token_rotated     alice  ${s}  cli     127.0.0.1     -               generation=2`,
    `2026-01-01T00:03:00Z  reuse_detected    alice  ${s}  cli     203.0.113.66  reuse_detected  replayed=0 live=2`,
    `2026-01-01T00:03:00Z  session_revoked   alice  ${s}  cli     203.0.113.66  reuse_detected  -`,
    ''
  ].join('\n'), 'every event, oldest first; the reuse names the generation replayed and the one live')

  const sessions = await cli(h.database, ['sessions', 'alice'])
  t.equal(sessions.code, 0, sessions.stderr)
  const [header, row] = sessions.stdout.trim().split('\n')
  t.match(header, /^SESSION\s+CLIENT\s+CREATED\s+LAST_USED\s+EXPIRES\s+GEN\s+STATUS\s+BOUND_IP\s+DEVICE\s+LAST_IP\s+BOUND_UA$/)
  t.match(row, new RegExp(`^${sid}\\s+cli\\s+2026-01-01T00:00:00Z\\s+2026-01-01T00:02:00Z\\s+2026-01-31T00:00:00Z\\s+2\\s+revoked \\(reuse_detected\\)\\s+127\\.0\\.0\\.1\\s+-\\s+127\\.0\\.0\\.1\\s+curl/8\\.5\\.0$`))

  const bySession = await cli(h.database, ['events', '--session', sid, '--limit', '2'])
  t.equal(bySession.stdout.trim().split('\n').length, 3, '--limit keeps the newest n')
  t.match(bySession.stdout, /reuse_detected[^\n]*\n[^\n]*session_revoked/)
})

t.test('a fingerprint mismatch and an operator revocation show in the lineage', async (t) => {
  const h = await build(t)
  // The CLI computes live/expired on the real clock.
  h.clock.t = Date.now()
  const a = await h.login(CURL)
  h.clock.advance(30)
  const stolen = (await h.refresh(a.refresh_token as string, { headers: { 'user-agent': 'Other/2.0 (Windows)' }, ip: '198.51.100.20' })).body
  t.equal(stolen.reason, 'fingerprint_mismatch', 'another user agent: the session is revoked (default policy)')
  const lineage = await cli(h.database, ['lineage', sidOf(a.access_token)])
  t.match(lineage.stdout, /status {4}REVOKED at \S+: fingerprint_mismatch/)
  t.match(lineage.stdout, /\n +! FINGERPRINT {3}\S+ {2}198\.51\.100\.20 +Other\/2\.0 \(Windows\) {2}-> user_agent,ip changed \(policy revoke\)\n/)
  t.match(lineage.stdout, /x REVOKED {2}\S+ {2}198\.51\.100\.20 +Other\/2\.0 \(Windows\) {2}-> fingerprint_mismatch\n$/)

  const b = await h.login(CURL)
  const live = await cli(h.database, ['lineage', sidOf(b.access_token)])
  t.match(live.stdout, /status {4}live\n/)
  t.match(live.stdout, /<- the live token/)

  const revoke = await cli(h.database, ['revoke', '--session', sidOf(b.access_token)])
  t.equal(revoke.code, 0, revoke.stderr)
  t.equal(revoke.stdout, `revoked session ${sidOf(b.access_token)}\n`)
  t.equal((await h.refresh(b.refresh_token as string, CURL)).body.reason, 'session_revoked', 'the server refuses it at once')
  const again = await cli(h.database, ['revoke', '--session', sidOf(b.access_token)])
  t.equal(again.code, 0)
  t.equal(again.stdout, `session ${sidOf(b.access_token)} was already revoked (operator_revoked)\n`)
  t.match((await cli(h.database, ['lineage', sidOf(b.access_token)])).stdout, /x REVOKED .*-> operator_revoked \(via cli\)\n$/)

  const c = await h.login(CURL)
  const d = await h.login(CURL)
  const byUser = await cli(h.database, ['revoke', '--user', 'alice'])
  t.equal(byUser.stdout, 'revoked 2 sessions of alice\n')
  for (const x of [c, d]) t.equal((await h.refresh(x.refresh_token as string, CURL)).body.reason, 'session_revoked')
  t.match((await cli(h.database, ['sessions', 'alice'])).stdout, /revoked \(operator_revoked\)[^\n]*\n[^\n]*revoked \(operator_revoked\)/)
})

t.test('bad input: one line on stderr and a non-zero exit', async (t) => {
  const h = await build(t)
  const cases: Array<[string[], number, RegExp]> = [
    [['lineage'], 2, /^tokenline: usage: tokenline lineage <session_id>\n$/],
    [['lineage', 'nope'], 1, /^tokenline: no session "nope"/],
    [['lineage', '../../etc/passwd'], 1, /^tokenline: no session/],
    [['sessions'], 2, /^tokenline: usage: tokenline sessions <username>\n$/],
    [['sessions', 'ghost'], 1, /^tokenline: no user ghost\n$/],
    [['revoke'], 2, /exactly one of --session or --user/],
    [['revoke', '--session', 'a', '--user', 'alice'], 2, /exactly one of --session or --user/],
    [['revoke', '--session', 'nope'], 1, /^tokenline: no session nope\n$/],
    [['revoke', '--user', 'ghost'], 1, /^tokenline: no user ghost\n$/],
    [['revoke', '--everything'], 2, /Unknown option '--everything'/],
    [['events', '--user', 'ghost'], 1, /^tokenline: no user ghost\n$/],
    [['events', '--limit', 'lots'], 2, /--limit must be a positive integer/],
    [['events', 'extra'], 2, /^tokenline: .*usage: tokenline events/],
    [['prune', 'now'], 2, /^tokenline: usage: tokenline prune/]
  ]
  // Independent read-only runs: in parallel, to keep the suite quick on a busy machine.
  const runs = await Promise.all(cases.map(async ([args]) => await cli(h.database, args)))
  for (const [i, [args, code, stderr]] of cases.entries()) {
    const r = runs[i] as Awaited<ReturnType<typeof cli>>
    t.equal(r.code, code, `${args.join(' ')}: exit ${code}`)
    t.match(r.stderr, stderr)
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
    t.equal(r.stdout, '')
  }
  t.equal((await cli(h.database, ['events', '--user', 'alice'])).stdout, 'no events\n')
  const help = await cli(h.database, ['help'])
  for (const cmd of ['sessions <username>', 'revoke --session <id> | --user <username>', 'lineage <session_id>', 'events [--user <username>]', 'prune']) {
    t.ok(help.stdout.includes(cmd), `help lists ${cmd}`)
  }
})

t.test('the server log carries every event as a structured line, and never a secret', async (t) => {
  const dir = t.testdir({})
  const lines: string[] = []
  const stream = new Writable({ write (chunk, _enc, cb) { lines.push(...String(chunk).split('\n').filter((l) => l !== '')); cb() } })
  const app = Fastify({ logger: { level: 'info', stream } })
  const clock = new TestClock()
  await app.register(tokenline, { database: join(dir, 'db.sqlite'), argon2: CHEAP_ARGON2, now: clock.now, reuseGrace: 10 })
  t.teardown(() => app.close())
  const store = app.tokenline.store
  const { createPasswords } = await import('../server/security/passwords.js')
  await store.createUser({ id: 'u-alice', username: 'alice', passwordHash: await createPasswords(CHEAP_ARGON2).hash(PASSWORD), now: clock.now() })
  await store.createClient({ id: 'cli', secretDigest: null, delivery: 'body', grants: 'password refresh_token', scopes: 'read write', origins: '', accessTtl: null, idleTtl: null, sessionTtl: null, now: clock.now() })
  const h = { app, clock } as unknown as Harness
  const sid = await breachedSession(t, h)
  const wrong = await app.inject({ method: 'POST', url: '/token', payload: { grant_type: 'password', client_id: 'cli', username: 'alice', password: 'not the password' } })
  t.equal(wrong.statusCode, 400)

  const events = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => typeof l.event === 'string')
  t.same(events.map((e) => e.event), ['login_succeeded', 'token_rotated', 'refresh_replayed', 'token_rotated', 'reuse_detected', 'session_revoked', 'login_failed'])
  t.match(events[4], { event: 'reuse_detected', user: 'u-alice', session: sid, client: 'cli', ip: EVIL_IP, ua: EVIL_UA, reason: 'reuse_detected', detail: { replayed: 0, live: 2 } })
  t.match(events[6], { event: 'login_failed', user: 'u-alice', reason: 'wrong_password' })
  const all = lines.join('\n')
  t.notMatch(all, /tlrt_/, 'no refresh token')
  t.notMatch(all, /eyJ/, 'no JWT')
  t.notMatch(all, /not the password|correct horse/, 'no password')
})
