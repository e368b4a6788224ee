import { join } from 'node:path'
import pg from 'pg'
import t, { type Test } from 'tap'
import { lineageViolations } from './invariants.js'
import { postgres, type PgServer } from './postgres.js'
import { CHEAP_ARGON2_ENV, cleanEnv, freePort, MAIN, ROOT, run, sendForm, startServer, tempDir, type Outcome, type Server } from './processes.js'
import { seedAlice } from './races.js'
import { PASSWORD } from './helpers.js'

/*
 * Faults, against real server processes and a real PostgreSQL cluster:
 *
 * - PostgreSQL stopped hard (`pg_ctl stop -m immediate`) under load (clients chaining their refresh
 *   tokens, and logins, whose session is written in a transaction), then started again. So that the
 *   stop surely finds transactions open, the test first locks the sessions table and waits until a
 *   login waits for it between its BEGIN and its INSERT. Every answer
 *   is a 200 or a 503 with Retry-After and an RFC 6749 §5.2 body `{"error":"temporarily_unavailable"}`,
 *   never a 500, and no request hangs (each has a client timeout well above the server's statement
 *   timeout); the server process survives; /healthz says 503 while it is down. Once it is back,
 *   without restarting the server process, refreshes succeed and /healthz says 200; the lineage
 *   invariants hold and the last refresh token each client received still works.
 * - PostgreSQL unreachable at start: the standalone server exits non-zero with one line on stderr that
 *   names the server's host:port and never the password in the URL.
 * - The server process killed with SIGKILL under refresh load, on SQLite and on PostgreSQL, and started
 *   again on the same database: the invariants hold and the last refresh token each client received
 *   still works. (A request in flight at the kill may have rotated its token without its client hearing
 *   of it: that client retries its last token, which the grace window answers with the successor.)
 */

const CLIENTS = 6
/** Clients that only log in, again and again. */
const LOGINS = 2
const UA = 'tokenline-faults-test/1'
/** TOKENLINE_PG_STATEMENT_TIMEOUT of the server under test, s. */
const STATEMENT_TIMEOUT = 2
/** Each request's own deadline, well above what the server may take (a statement and a wait for a connection). */
const CLIENT_TIMEOUT_MS = 15_000
/** Set explicitly, and far longer than any restart here takes: see the SIGKILL test. */
const GRACE = 60

interface Answer { phase: string, outcome: Outcome }

/**
 * CLIENTS clients, each logged in once and then refreshing its own session as a real client does: the
 * next refresh presents the token the last 200 carried, and after anything else the same token again.
 */
class Load {
  readonly answers: Answer[] = []
  /** The refresh token each client holds: the one its last 200 carried. */
  readonly tokens: string[] = []
  /** 200s per client in the current phase. */
  wins: number[] = []
  phase = 'up'
  readonly #server: Server
  #stopped = false
  /** Workers still sending: a worker stops when the server is gone. */
  #running = 0
  #workers: Array<Promise<void>> = []

  constructor (server: Server) {
    this.#server = server
  }

  async start (): Promise<void> {
    for (let i = 0; i < CLIENTS; i++) {
      const o = await this.send({ grant_type: 'password', client_id: 'cli', username: 'alice', password: PASSWORD })
      if (o.kind !== 'response' || o.status !== 200) throw new Error(`login failed: ${JSON.stringify(o)}`)
      this.tokens.push((JSON.parse(o.body) as { refresh_token: string }).refresh_token)
    }
    this.enter('up')
    const run = async (work: () => Promise<void>): Promise<void> => {
      this.#running++
      try { await work() } finally { this.#running-- }
    }
    this.#workers = [
      ...this.tokens.map(async (_, i) => { await run(async () => { await this.worker(i) }) }),
      ...Array.from({ length: LOGINS }, async () => { await run(async () => { await this.loginWorker() }) })
    ]
  }

  enter (phase: string): void {
    this.phase = phase
    this.wins = this.tokens.map(() => 0)
  }

  async send (params: Record<string, string>): Promise<Outcome> {
    return await sendForm(`${this.#server.url}/token`, params, { 'user-agent': UA }, { timeoutMs: CLIENT_TIMEOUT_MS }).outcome
  }

  async worker (i: number): Promise<void> {
    while (!this.#stopped) {
      const phase = this.phase
      const outcome = await this.send({ grant_type: 'refresh_token', client_id: 'cli', refresh_token: this.tokens[i] as string })
      this.answers.push({ phase, outcome })
      if (outcome.kind === 'response' && outcome.status === 200) {
        this.tokens[i] = (JSON.parse(outcome.body) as { refresh_token: string }).refresh_token
        this.wins[i] = (this.wins[i] ?? 0) + 1
      }
      if (outcome.kind === 'cut' && outcome.error !== 'timeout') return // the server is gone
    }
  }

  /** Someone signing in over and over (a login writes a session and its first token in one transaction). */
  async loginWorker (): Promise<void> {
    while (!this.#stopped) {
      const phase = this.phase
      const outcome = await this.send({ grant_type: 'password', client_id: 'cli', username: 'alice', password: PASSWORD })
      this.answers.push({ phase, outcome })
      if (outcome.kind === 'cut' && outcome.error !== 'timeout') return // the server is gone
    }
  }

  /** Waits until `done()`, looking again after every answer; fails after `ms`. */
  async until (done: () => boolean, ms: number, what: string): Promise<void> {
    const deadline = Date.now() + ms
    while (!done()) {
      const why = this.#running === 0 ? 'every client stopped, the server is gone' : Date.now() > deadline ? `timed out after ${ms} ms` : undefined
      if (why !== undefined) throw new Error(`${why} waiting for ${what}; cut off: ${this.cut().join(', ')}; server log:\n${notable(this.#server)}`)
      await new Promise((resolve) => setImmediate(resolve))
    }
  }

  /** The errors of the requests that got no complete answer. */
  cut (): string[] {
    return this.answers.flatMap(({ outcome: o }) => o.kind === 'cut' ? [o.error] : [])
  }

  async stop (): Promise<void> {
    this.#stopped = true
    await Promise.all(this.#workers)
  }
}

/** The last lines of the server's output other than the per-request ones: warnings, errors, a crash. */
function notable (server: Server): string {
  return server.output().split('\n').filter((l) => !/"msg":"(incoming request|request completed|security event [a-z_]+)"/.test(l)).slice(-20).join('\n')
}

/**
 * Takes a SHARE lock on the sessions table in a transaction of its own, which holds writers to it
 * (a login's INSERT, a rotation's UPDATE) until the lock goes. `until(n)` waits until `n` of
 * Tokenline's connections wait for it inside a transaction of theirs.
 */
async function holdSessions (t: Test, url: string): Promise<{ until: (n: number, ms: number) => Promise<void>, end: () => Promise<void> }> {
  const c = new pg.Client({ connectionString: url })
  c.on('error', () => {}) // its server is about to go away
  await c.connect()
  let ended = false
  const end = async (): Promise<void> => {
    if (!ended) await c.end().catch(() => {})
    ended = true
  }
  t.teardown(end)
  await c.query('BEGIN')
  await c.query('LOCK TABLE sessions IN SHARE MODE')
  return {
    until: async (n, ms) => {
      const deadline = Date.now() + ms
      for (;;) {
        // Inside a transaction the activity view is read once and kept: drop that copy on every look.
        await c.query('SELECT pg_stat_clear_snapshot()')
        const { rows } = await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE application_name = 'tokenline' AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO sessions%'`)
        if ((rows[0]?.n ?? 0) >= n) return
        if (Date.now() > deadline) throw new Error(`no login waited inside its transaction within ${ms} ms`)
      }
    },
    end
  }
}

/** A refresh of `token` at `server`: the status and the body. */
async function refresh (server: Server, token: string): Promise<{ status: number, body: string }> {
  const o = await sendForm(`${server.url}/token`, { grant_type: 'refresh_token', client_id: 'cli', refresh_token: token }, { 'user-agent': UA }, { timeoutMs: CLIENT_TIMEOUT_MS }).outcome
  return o.kind === 'response' ? o : { status: 0, body: o.error }
}

async function healthz (server: Server): Promise<number> {
  return (await fetch(`${server.url}/healthz`, { signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS) })).status
}

/** Answers that are neither a 200 nor an RFC 6749 temporarily_unavailable 503 with Retry-After, one line each. */
function wrongAnswers (answers: Answer[]): string[] {
  const wrong: string[] = []
  for (const { phase, outcome: o } of answers) {
    if (o.kind === 'cut') { wrong.push(`${phase}: ${o.error}`); continue }
    if (o.status === 200) continue
    let error: unknown
    try { error = (JSON.parse(o.body) as { error?: unknown }).error } catch { error = undefined }
    if (o.status !== 503 || error !== 'temporarily_unavailable' || o.headers['retry-after'] === undefined) {
      wrong.push(`${phase}: ${o.status} retry-after=${String(o.headers['retry-after'])} ${o.body}`)
    }
  }
  return wrong
}

const count = (answers: Answer[], phase: string, status: number): number =>
  answers.filter((a) => a.phase === phase && a.outcome.kind === 'response' && a.outcome.status === status).length

/** The environment of a server under test on `database`. */
const serverEnv = (database: string): Record<string, string> => ({
  TOKENLINE_DB: database,
  TOKENLINE_PG_STATEMENT_TIMEOUT: String(STATEMENT_TIMEOUT),
  TOKENLINE_REUSE_GRACE: String(GRACE),
  // One address sends all of this; the per-IP budgets are not what these tests are about.
  TOKENLINE_THROTTLE_PASSWORD: '0',
  TOKENLINE_THROTTLE_FAILURES: '0',
  ...CHEAP_ARGON2_ENV
})

t.test('PostgreSQL unreachable at start: one line naming host:port, never the password, and a non-zero exit', async (t) => {
  const port = await freePort()
  const password = 'canary-pg-password-5f3a'
  const r = await run(process.execPath, [MAIN], {
    env: cleanEnv({ TOKENLINE_DB: `postgres://tokenline:${password}@127.0.0.1:${port}/tokenline`, TOKENLINE_PG_STATEMENT_TIMEOUT: String(STATEMENT_TIMEOUT), PORT: '0', HOST: '127.0.0.1' }),
    cwd: ROOT,
    input: ''
  })
  t.not(r.code, 0, 'exits non-zero')
  const lines = r.stderr.split('\n').filter((l) => l !== '')
  t.equal(lines.length, 1, `one line on stderr: ${r.stderr}`)
  t.match(lines[0], `127.0.0.1:${port}`, 'naming the server')
  t.notMatch(r.stderr + r.stdout, password, 'never its password')
})

/**
 * The server on `database` killed with SIGKILL while CLIENTS clients refresh, then started again on
 * the same database: what a crash leaves must need nothing but the next start.
 */
async function sigkillUnderLoad (t: Test, database: string): Promise<void> {
  await seedAlice(database)
  let server = await startServer(t, serverEnv(database))
  const load = new Load(server)
  await load.start()
  await load.until(() => load.wins.every((w) => w >= 10), 30_000, 'ten refreshes per client')
  // Every worker has a request in flight (it sends the next one as soon as an answer arrives).
  server.child.kill('SIGKILL')
  t.same(await server.exited, { code: null, signal: 'SIGKILL' }, 'the server was killed')
  await load.stop()
  const cut = load.answers.filter((a) => a.outcome.kind === 'cut').length
  const statuses = load.answers.flatMap((a) => a.outcome.kind === 'response' ? [a.outcome.status] : [])
  t.same(statuses.filter((s) => s !== 200), [], 'every answer before the kill was a 200')
  t.comment(`${load.answers.length - cut} answers before the kill, ${cut} requests cut off by it`)

  server = await startServer(t, serverEnv(database))
  t.same(await lineageViolations(database), [], 'lineage invariants hold after the restart')
  const last = await Promise.all(load.tokens.map(async (token) => await refresh(server, token)))
  t.same(last.map((r) => r.status), load.tokens.map(() => 200), `the last refresh token each client received still works: ${JSON.stringify(last.filter((r) => r.status !== 200))}`)
  t.same(await lineageViolations(database), [], 'and still after those refreshes')
}

/** The server under load while PostgreSQL is stopped hard and started again. */
async function outage (t: Test, cluster: Required<PgServer>): Promise<void> {
  const url = await cluster.database(t)
  await seedAlice(url)
  const server = await startServer(t, serverEnv(url))
  const load = new Load(server)
  await load.start()
  const everyone = (n: number) => (): boolean => load.wins.every((w) => w >= n)

  await load.until(everyone(5), 30_000, 'five refreshes per client')
  // Hard, mid-load, and with transactions open: a lock on the sessions table holds every login inside
  // its transaction (between BEGIN and the session's INSERT) and every rotation at its UPDATE.
  const waiting = await holdSessions(t, url)
  await waiting.until(1, 10_000)
  // Should the test fail while it is down, the cluster is started again for the tests after this one.
  let down = true
  t.teardown(async () => { if (down) await cluster.start() })
  await cluster.stop()
  await waiting.end()
  load.enter('down')
  await load.until(() => count(load.answers, 'down', 503) >= 20 * CLIENTS, 30_000, 'answers while PostgreSQL is down')
  t.equal(await healthz(server), 503, '/healthz answers 503 while PostgreSQL is down')

  // Requests sent while it starts may meet it recovering (503) or already up (200).
  load.enter('starting')
  await cluster.start()
  down = false
  load.enter('back')
  await load.until(everyone(5), 30_000, 'five refreshes per client after the restart')
  t.equal(await healthz(server), 200, '/healthz answers 200 once PostgreSQL is back')
  await load.stop()

  const total = load.answers.length
  t.same(wrongAnswers(load.answers), [], `all ${total} answers are 200, or 503 temporarily_unavailable with Retry-After; none hung past ${CLIENT_TIMEOUT_MS} ms`)
  t.equal(count(load.answers, 'down', 200), 0, 'nothing succeeded while PostgreSQL was down')
  t.comment(['up', 'down', 'starting', 'back'].map((phase) => `${phase}: ${count(load.answers, phase, 200)} x 200, ${count(load.answers, phase, 503)} x 503`).join('; '))
  t.same(await lineageViolations(url), [], 'lineage invariants hold')
  const last = await Promise.all(load.tokens.map(async (token) => (await refresh(server, token)).status))
  t.same(last, load.tokens.map(() => 200), 'the last refresh token each client received still works')
  t.notMatch(server.output(), /"statusCode":500/, 'the server never answered 500')
  t.same({ code: server.child.exitCode, signal: server.child.signalCode }, { code: null, signal: null }, 'the server process is still running')
}

t.test('SIGKILL under refresh load, SQLite: restarted on the same file, acknowledged tokens still work', async (t) => {
  await sigkillUnderLoad(t, join(tempDir(t), 'tokenline.db'))
})

t.test('on PostgreSQL', async (t) => {
  const cluster = await postgres(t)
  if (cluster === undefined) return
  t.test('stopped hard under refresh load: 503 with Retry-After while down, service resumes when it is back',
    { skip: cluster.stop === undefined ? 'needs a cluster the tests start (not TOKENLINE_TEST_PG_URL)' : false },
    async (t) => { await outage(t, cluster as Required<PgServer>) })
  t.test('SIGKILL under refresh load: restarted on the same database, acknowledged tokens still work', async (t) => {
    await sigkillUnderLoad(t, await cluster.database(t))
  })
})
