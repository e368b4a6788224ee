import pg from 'pg'
import t, { type Test } from 'tap'
import { postgres } from './postgres.js'
import { startFixture, type Fixture } from './processes.js'
import { loginToken, race, seedAlice, type Round } from './races.js'

/*
 * Exactly-once rotation across instances on PostgreSQL (RFC 9700 §4.14.2: a rotated refresh token is
 * used once), with real server processes on one database; test/concurrency.test.ts is the SQLite
 * counterpart. Each round fires PARALLEL refreshes of one token spread over the processes, each on a
 * TCP connection of its own. After every round: no 5xx; with a grace window every request gets the one
 * successor, without one exactly one wins and the others are refused as reuse; the session has exactly
 * one child more; and the lineage invariants hold (never more than one live token per session).
 *
 * A negative control runs the same races in processes whose refresh statements lack their
 * compare-and-set (TOKENLINE_TEST_NO_CAS, test/fixtures/server-process.mjs), and must be caught: on the
 * schema as shipped the UNIQUE (session_id, generation) of refresh_tokens turns the second rotation
 * of a token into a constraint error (a 500); with that backstop dropped too, the fork itself shows,
 * as more than one successor for one token and broken lineage invariants.
 */

const PROCESSES = 2
const PARALLEL = 20
const ROUNDS = 10
/** Rounds of each negative control: at least the first, at most the second (it stops once caught). */
const CONTROL_ROUNDS = 4
const CONTROL_MAX_ROUNDS = 30
/** Long enough that a slow round on a busy machine still falls inside the window; set explicitly. */
const GRACE = 30

const server = await postgres(t)

/** A new database with alice and the public body client `cli`: its URL. */
async function seed (t: Test): Promise<string> {
  const url = await (server as NonNullable<typeof server>).database(t)
  await seedAlice(url)
  return url
}

async function startProcesses (t: Test, url: string, grace: number, env: Record<string, string> = {}): Promise<Fixture[]> {
  return await Promise.all(Array.from({ length: PROCESSES }, async () => await startFixture(t, url, { grace, env })))
}

const stderrOf = (procs: Fixture[]): string => procs.map((p) => p.stderr()).join('')

/**
 * What the checks find wrong with round `n` (its generation is `n` when the rounds chain one session's
 * tokens, 1 when each round starts a session): with a grace window, every request gets the one
 * successor; without, exactly one wins and the rest are refused as reuse. Never a 5xx; invariants hold.
 */
function problemsOf (r: Round, grace: boolean, n: number): string[] {
  const problems: string[] = []
  if (r.serverErrors > 0) problems.push(`${r.serverErrors} server errors`)
  if (grace) {
    if ((r.statuses[200] ?? 0) !== PARALLEL) problems.push(`statuses ${JSON.stringify(r.statuses)}, reasons ${r.reasons.join(',')}`)
    if (r.successors.length !== 1) problems.push(`${r.successors.length} distinct successors`)
  } else {
    if ((r.statuses[200] ?? 0) !== 1) problems.push(`${r.statuses[200] ?? 0} x 200`)
    if ((r.statuses[400] ?? 0) !== PARALLEL - 1) problems.push(`statuses ${JSON.stringify(r.statuses)}`)
    const odd = r.reasons.filter((x) => x !== 'invalid_grant/reuse_detected')
    if (odd.length > 0) problems.push(`unexpected refusals ${odd.join(',')}`)
  }
  if (r.generation !== n || r.lineage !== n + 1) problems.push(`generation ${r.generation} with ${r.lineage} tokens, wanted ${n} with ${n + 1}`)
  problems.push(...r.violations)
  return problems
}

if (server !== undefined) {
  t.test(`grace ${GRACE} s: ${PARALLEL} parallel refreshes over ${PROCESSES} processes, ${ROUNDS} rounds`, async (t) => {
    const url = await seed(t)
    const procs = await startProcesses(t, url, GRACE)
    let token = await loginToken(procs[0] as Fixture)
    const failures: string[] = []
    for (let n = 1; n <= ROUNDS; n++) {
      const r = await race(procs, url, token, PARALLEL)
      const problems = problemsOf(r, true, n)
      if (problems.length > 0) failures.push(`round ${n}: ${problems.join('; ')}`)
      // Stop at the first broken round: later rounds would only repeat it.
      if (problems.length > 0 || r.successors[0] === undefined) break
      token = r.successors[0]
    }
    t.same(failures, [], `every round: ${PARALLEL} x 200 with one shared successor, exactly one child, invariants hold`)
    t.equal(stderrOf(procs), '', 'no errors logged by any process')
  })

  t.test(`grace 0: exactly one of ${PARALLEL} parallel refreshes over ${PROCESSES} processes wins, ${ROUNDS} rounds`, async (t) => {
    const url = await seed(t)
    const procs = await startProcesses(t, url, 0)
    const failures: string[] = []
    for (let n = 1; n <= ROUNDS; n++) {
      // Each round needs a new session: the losers' reuse revokes the one they raced on.
      const token = await loginToken(procs[n % PROCESSES] as Fixture)
      const problems = problemsOf(await race(procs, url, token, PARALLEL), false, 1)
      if (problems.length > 0) { failures.push(`round ${n}: ${problems.join('; ')}`); break }
    }
    t.same(failures, [], `every round: 1 x 200 and ${PARALLEL - 1} x invalid_grant reuse_detected, one child, invariants hold`)
    t.equal(stderrOf(procs), '', 'no errors logged by any process')
  })

  interface Tally { rounds: number, caught: number, serverErrors: number, forked: number, extraWinners: number, violations: number }

  /**
   * Rounds on processes without the compare-and-set, with `grace` (chaining the successors while the
   * session stays sound, a fresh login otherwise) or without (a login each round): at least
   * CONTROL_ROUNDS, and on until `caught(tally)` or CONTROL_MAX_ROUNDS. What the checks saw.
   */
  async function controlRaces (t: Test, url: string, grace: number, caught: (tally: Tally) => boolean): Promise<Tally> {
    const procs = await startProcesses(t, url, grace, { TOKENLINE_TEST_NO_CAS: '1' })
    const tally: Tally = { rounds: 0, caught: 0, serverErrors: 0, forked: 0, extraWinners: 0, violations: 0 }
    let token = await loginToken(procs[0] as Fixture)
    let n = 1
    while (tally.rounds < CONTROL_ROUNDS || (!caught(tally) && tally.rounds < CONTROL_MAX_ROUNDS)) {
      const r = await race(procs, url, token, PARALLEL)
      tally.rounds++
      // The lineage checks read the whole database: a round's own violations are the new ones.
      const broke = r.violations.length > tally.violations
      tally.violations = r.violations.length
      if (broke || problemsOf({ ...r, violations: [] }, grace > 0, n).length > 0) tally.caught++
      tally.serverErrors += r.serverErrors
      if (r.successors.length > 1) tally.forked++
      if (grace === 0 && (r.statuses[200] ?? 0) > 1) tally.extraWinners++
      // Chain on while the session is sound; a broken one would only be judged against its breakage.
      const next = grace > 0 && r.successors.length === 1 && r.generation === n ? r.successors[0] : undefined
      if (next !== undefined) { token = next; n++ } else { token = await loginToken(procs[0] as Fixture); n = 1 }
    }
    return tally
  }

  t.test('negative control: without the compare-and-set, the same races are caught', async (t) => {
    t.test('grace 0, on the schema as shipped: 5xx from the UNIQUE backstop', async (t) => {
      const tally = await controlRaces(t, await seed(t), 0, (x) => x.serverErrors > 0)
      t.comment(`no compare-and-set, grace 0: ${JSON.stringify(tally)}`)
      t.ok(tally.caught > 0, 'the per-round checks detect the missing compare-and-set')
      t.ok(tally.serverErrors > 0, 'as 500s: the second rotation of a token breaks UNIQUE (session_id, generation)')
    })

    t.test(`grace ${GRACE} s, without the UNIQUE backstop: the fork itself`, async (t) => {
      const url = await seed(t)
      const c = new pg.Client({ connectionString: url })
      await c.connect()
      try {
        const { rows } = await c.query<{ conname: string }>("SELECT conname FROM pg_constraint WHERE conrelid = 'refresh_tokens'::regclass AND contype = 'u'")
        t.equal(rows.length, 1, 'refresh_tokens has one UNIQUE constraint, (session_id, generation)')
        for (const { conname } of rows) await c.query(`ALTER TABLE refresh_tokens DROP CONSTRAINT ${conname}`)
      } finally {
        await c.end()
      }
      const tally = await controlRaces(t, url, GRACE, (x) => x.forked > 0 && x.violations > 0)
      t.comment(`no compare-and-set, no UNIQUE, grace ${GRACE} s: ${JSON.stringify(tally)}`)
      t.ok(tally.forked > 0, 'more than one successor handed out for one token')
      t.ok(tally.violations > 0, 'the lineage invariants break: more than one live token in a session')
    })
  })
}
