import Database from 'better-sqlite3'
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { lineageViolations } from './invariants.js'
import { addAliceAndCli, sendForm, startServer, type Outcome, type Sent } from './processes.js'

/*
 * SIGTERM under load, against a real server process: every request the server had received when the
 * signal arrived gets its complete response, the process exits 0, and the database it leaves needs no
 * recovery (no -wal content left to replay; integrity and lineage intact).
 */

const PASSWORD = 'shutdown test password'

function isJson (text: string): boolean {
  try { JSON.parse(text); return true } catch { return false }
}

t.test('SIGTERM under load: in-flight requests finish, exit 0, database closed cleanly', async (t) => {
  const dir = t.testdir({})
  const db = join(dir, 'tokenline.db')
  const env = {
    TOKENLINE_DB: db,
    // Throttling would turn this load into 429s; it is not what this test is about.
    TOKENLINE_THROTTLE_PASSWORD: '0',
    TOKENLINE_THROTTLE_FAILURES: '0',
    // Every request received is logged at debug ("incoming request"): the count below waits for them.
    TOKENLINE_LOG_LEVEL: 'debug'
  }
  // Production argon2 parameters (the defaults): a login takes tens of ms, so some are surely in flight.
  await addAliceAndCli(t, env, PASSWORD)
  const server = await startServer(t, env)

  const all: Array<Sent & { phase: 'load' | 'final' }> = []
  const send = (params: Record<string, string>, phase: 'load' | 'final'): Sent => {
    const s = sendForm(`${server.url}/token`, { client_id: 'cli', ...params })
    all.push({ ...s, phase })
    return s
  }
  const login = (phase: 'load' | 'final'): Sent => send({ grant_type: 'password', username: 'alice', password: PASSWORD }, phase)
  const tokenOf = (o: Outcome): string | undefined => (o.kind === 'response' && o.status === 200 ? (JSON.parse(o.body) as { refresh_token: string }).refresh_token : undefined)

  // Load: 6 workers, each logging in and refreshing its own session over and over.
  // Shared with the workers: an object, so the loops below see each other's updates.
  const load = { stop: false, completed: 0 }
  const worker = async (): Promise<void> => {
    let rt: string | undefined
    for (let i = 0; !load.stop; i++) {
      const s = rt === undefined || i % 10 === 0 ? login('load') : send({ grant_type: 'refresh_token', refresh_token: rt }, 'load')
      const o = await s.outcome
      load.completed++
      rt = tokenOf(o) ?? rt
    }
  }
  const workers = Array.from({ length: 6 }, async () => await worker())
  while (load.completed < 150) await new Promise((resolve) => setImmediate(resolve))
  load.stop = true
  // A last burst of slow logins, in flight when the signal arrives.
  const final = Array.from({ length: 6 }, () => login('final'))
  await Promise.all(all.map(async (s) => await s.written))

  // Signal only once the server has received every request sent: from then on, any request without
  // a response is one the server holds. (A connection still in the kernel's accept queue when the
  // listener closes is refused, like any request after shutdown: not a cut-off.)
  const received = (): number => (server.output().match(/"msg":"incoming request"/g) ?? []).length
  const deadline = Date.now() + 60_000
  while (received() < all.length && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
  t.equal(received(), all.length, 'the server logged every request as received')
  let answered = 0
  for (const s of all) s.outcome.then(() => { answered++ }, () => {})
  await new Promise((resolve) => setImmediate(resolve))
  const inFlight = all.length - answered
  server.child.kill('SIGTERM')

  const outcomes = await Promise.all(all.map(async (s) => await s.outcome))
  await Promise.all(workers)
  t.ok(inFlight > 0, `${inFlight} requests were in flight when SIGTERM arrived`)
  const cut = outcomes.filter((o) => o.kind === 'cut')
  t.same(cut, [], 'no request was cut off')
  // 200, or a JSON refusal (503 while the argon2 queue is full): complete and well-formed either way.
  const malformed = outcomes.filter((o) => o.kind === 'response' && !isJson(o.body))
  t.same(malformed, [], `all ${outcomes.length} responses carry a complete JSON body`)
  const finals = await Promise.all(final.map(async (s) => await s.outcome))
  t.ok(finals.every((o) => o.kind === 'response'), 'the last logins, in flight at the signal, were answered')

  const exit = await server.exited
  t.same(exit, { code: 0, signal: null }, 'the server exited 0')
  t.match(server.output(), /shutting down: finishing in-flight requests/)

  // The last connection's close checkpointed the WAL into the main file and removed it.
  t.ok(!existsSync(`${db}-wal`) || statSync(`${db}-wal`).size === 0, 'no -wal content left to recover')
  const reopened = new Database(db, { readonly: true, fileMustExist: true })
  t.equal(reopened.pragma('integrity_check', { simple: true }), 'ok')
  reopened.close()
  t.same(await lineageViolations(db), [], 'lineage invariants hold')
})
