import { join } from 'node:path'
import t, { type Test } from 'tap'
import { startFixture, type Fixture } from './processes.js'
import { loginToken as loginAt, race as raceOf, seedAlice, type Round } from './races.js'

/*
 * Exactly-once rotation across processes (RFC 9700 §4.14.2: a rotated refresh token is used once).
 * Several real server processes share one SQLite file; each round fires PARALLEL refreshes of one token,
 * spread over the processes, each on its own TCP connection. The checks, after every round: no 5xx and
 * no SQLITE_BUSY anywhere; with grace, every request gets the one successor; without, exactly one wins;
 * and the lineage invariants hold on disk. A negative control runs the same race with the store's
 * immediate transactions turned deferred inside the server processes, and must be caught.
 */

const PROCESSES = 3
const PARALLEL = 20
const ROUNDS = 50
const CONTROL_ROUNDS = 20
/** Long enough that a slow round on a busy machine still falls inside the window; set explicitly. */
const GRACE = 30

/** A fresh database with user alice and the public body client `cli`, as the processes will find it. */
async function seed (t: Test): Promise<string> {
  const dbFile = join(t.testdir({}), 'tokenline.db')
  await seedAlice(dbFile)
  return dbFile
}

/** Fires PARALLEL refreshes of `token`, request i to process i mod n, then looks at the database. */
const race = async (procs: Fixture[], dbFile: string, token: string): Promise<Round> => await raceOf(procs, dbFile, token, PARALLEL)

const busyInLogs = (procs: Fixture[]): boolean => procs.some((p) => /SQLITE_BUSY|database is locked/i.test(p.stderr()))

t.test(`grace ${GRACE} s: ${PARALLEL} parallel refreshes over ${PROCESSES} processes, ${ROUNDS} rounds`, async (t) => {
  const dbFile = await seed(t)
  const procs: Fixture[] = []
  for (let i = 0; i < PROCESSES; i++) procs.push(await startFixture(t, dbFile, { grace: GRACE }))
  let token = await loginAt(procs[0] as Fixture)
  const failures: string[] = []
  for (let n = 1; n <= ROUNDS; n++) {
    const r = await race(procs, dbFile, token)
    const problems: string[] = []
    if (r.serverErrors > 0) problems.push(`${r.serverErrors} server errors`)
    if (r.busyInBody > 0) problems.push('SQLITE_BUSY in a response')
    if ((r.statuses[200] ?? 0) !== PARALLEL) problems.push(`statuses ${JSON.stringify(r.statuses)}, reasons ${r.reasons.join(',')}`)
    if (r.successors.length !== 1) problems.push(`${r.successors.length} distinct successors`)
    if (r.generation !== n || r.lineage !== n + 1) problems.push(`generation ${r.generation} with ${r.lineage} tokens, wanted ${n} with ${n + 1}`)
    problems.push(...r.violations)
    if (problems.length > 0) failures.push(`round ${n}: ${problems.join('; ')}`)
    // Stop at the first broken round: later rounds would only repeat it.
    if (problems.length > 0 || r.successors[0] === undefined) break
    token = r.successors[0]
  }
  t.same(failures, [], `every round: ${PARALLEL} x 200 with one shared successor, exactly one child, invariants hold`)
  t.notOk(busyInLogs(procs), 'no SQLITE_BUSY in any server log')
})

t.test(`grace 0: exactly one of ${PARALLEL} parallel refreshes wins, ${ROUNDS} rounds`, async (t) => {
  const dbFile = await seed(t)
  const procs: Fixture[] = []
  for (let i = 0; i < PROCESSES; i++) procs.push(await startFixture(t, dbFile, { grace: 0 }))
  const failures: string[] = []
  for (let n = 1; n <= ROUNDS; n++) {
    // Each round needs a new session: the losers' reuse revokes the one they raced on.
    const token = await loginAt(procs[n % PROCESSES] as Fixture)
    const r = await race(procs, dbFile, token)
    const problems: string[] = []
    if (r.serverErrors > 0) problems.push(`${r.serverErrors} server errors`)
    if (r.busyInBody > 0) problems.push('SQLITE_BUSY in a response')
    if ((r.statuses[200] ?? 0) !== 1) problems.push(`${r.statuses[200] ?? 0} x 200`)
    if ((r.statuses[400] ?? 0) !== PARALLEL - 1) problems.push(`statuses ${JSON.stringify(r.statuses)}`)
    const odd = r.reasons.filter((x) => x !== 'invalid_grant/reuse_detected')
    if (odd.length > 0) problems.push(`unexpected refusals ${odd.join(',')}`)
    if (r.generation !== 1 || r.lineage !== 2) problems.push(`generation ${r.generation} with ${r.lineage} tokens, wanted 1 with 2`)
    problems.push(...r.violations)
    if (problems.length > 0) { failures.push(`round ${n}: ${problems.join('; ')}`); break }
  }
  t.same(failures, [], `every round: 1 x 200 and ${PARALLEL - 1} x invalid_grant reuse_detected, one child, invariants hold`)
  t.notOk(busyInLogs(procs), 'no SQLITE_BUSY in any server log')
})

t.test('negative control: the same race with deferred transactions is caught', async (t) => {
  const dbFile = await seed(t)
  const procs: Fixture[] = []
  for (let i = 0; i < PROCESSES; i++) procs.push(await startFixture(t, dbFile, { grace: GRACE, env: { TOKENLINE_TEST_DEFERRED: '1' } }))
  let token = await loginAt(procs[0] as Fixture)
  const statuses: Record<number, number> = {}
  let caught = 0
  let forked = 0
  let violations = 0
  // A fixed number of rounds, so the comment below says how often the checks fire, not just whether;
  // fewer than the real variants, since the bug shows in most rounds and the suite shares 2 cores.
  for (let n = 1; n <= CONTROL_ROUNDS; n++) {
    const r = await race(procs, dbFile, token)
    for (const [status, count] of Object.entries(r.statuses)) statuses[Number(status)] = (statuses[Number(status)] ?? 0) + count
    if (r.successors.length > 1) forked++
    violations += r.violations.length
    if (r.serverErrors > 0 || r.busyInBody > 0 || r.successors.length > 1 || r.violations.length > 0 || (r.statuses[200] ?? 0) !== PARALLEL) caught++
    // A round where every request failed leaves the token as it was (nothing committed) or consumed: start over.
    token = r.successors[0] ?? await loginAt(procs[0] as Fixture)
  }
  const busy = busyInLogs(procs)
  const serverErrors = Object.entries(statuses).filter(([s]) => Number(s) >= 500).reduce((a, [, c]) => a + c, 0)
  t.comment(`deferred, ${CONTROL_ROUNDS} rounds x ${PARALLEL} requests: ${caught} round(s) caught; statuses ${JSON.stringify(statuses)}; ${forked} forked round(s); ${violations} invariant violation(s); SQLITE_BUSY in server logs: ${busy}`)
  t.ok(caught > 0, 'the per-round checks detect the deferred-transaction bug')
  t.ok(serverErrors === 0 || busy, 'the server errors there are the busy errors BEGIN IMMEDIATE prevents')
})
