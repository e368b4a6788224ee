import t, { type Test } from 'tap'
import { PASSWORD } from './helpers.js'
import { assertLineage } from './invariants.js'
import { postgres } from './postgres.js'
import { startFixture, type Fixture, type Run } from './processes.js'
import { cliRevocationRound, revocationRound, rotatedAfterRevocation, seedAlice, type Revocation } from './races.js'
import { tokenline as cli } from './session-helpers.js'

/*
 * A refresh racing a revocation across instances on PostgreSQL (RFC 7009 §2.1: the revocation takes
 * effect at once); test/revoke-race.test.ts is the SQLite counterpart. Server process A refreshes
 * while process B ends the session at the same instant (/token/revoke with any of the session's tokens,
 * the sessions API for one session or for all the others), or while the CLI, a process of its own,
 * changes the user's password or disables them (each of which ends all their sessions), with refresh
 * loops running on both server processes. Whichever commits first: no token of the session works afterwards
 * on either process, the session's lineage never grows after its revocation, and the lineage
 * invariants hold.
 *
 * The negative control runs the /token/revoke and sessions API races in processes whose refresh
 * statements lack their compare-and-set (TOKENLINE_TEST_NO_CAS, test/fixtures/server-process.mjs): a
 * rotation decided before the revocation then lands after it, which the event order shows.
 */

const KINDS: Revocation[] = ['refresh token', 'access token', 'consumed refresh token', 'sessions API', 'sessions API, all others']
const ROUNDS = KINDS.length * 3
const CONTROL_ROUNDS = 80

const server = await postgres(t)

/** A new database with alice and the public body client `cli`: its URL. */
async function seed (t: Test): Promise<string> {
  const url = await (server as NonNullable<typeof server>).database(t)
  await seedAlice(url)
  return url
}

const stderrOf = (procs: Fixture[]): string => procs.map((p) => p.stderr()).join('')

if (server !== undefined) {
  t.test('a refresh racing a revocation in another process never leaves a live token', async (t) => {
    const url = await seed(t)
    const [a, b] = await Promise.all([startFixture(t, url), startFixture(t, url)])
    const outcomes = { refreshFirst: 0, revokeFirst: 0 }
    let clean = true
    for (let i = 0; i < ROUNDS; i++) {
      const r = await revocationRound(t, a, b, KINDS[i % KINDS.length] as Revocation, i)
      if (r.refreshFirst) outcomes.refreshFirst++
      else outcomes.revokeFirst++
      clean = r.clean && clean
    }
    t.ok(clean, `no token survived any of ${ROUNDS} revocations`)
    t.comment(`refresh committed first ${outcomes.refreshFirst} times, revocation first ${outcomes.revokeFirst} times`)
    t.same(await rotatedAfterRevocation(url), [], 'no session rotated after its revocation')
    t.equal(stderrOf([a, b]), '', 'no errors logged by either process')
    await assertLineage(t, url)
  })

  t.test('the CLI changing the password of or disabling the user races refreshes in two server processes', async (t) => {
    const url = await seed(t)
    const procs = await Promise.all([startFixture(t, url), startFixture(t, url)])
    const run = (args: string[], input = ''): () => Promise<Run> => async () => await cli(url, args, input)
    // Each loop refreshes as fast as it can while the CLI starts; only the newest tokens can still be live.
    const latest = 2
    await cliRevocationRound(t, procs, run(['user', 'passwd', 'alice'], `${PASSWORD}\n`), { said: /^changed password of alice; revoked 3 sessions\n$/, reasons: ['session_revoked'], i: 0, latest })
    await cliRevocationRound(t, procs, run(['user', 'disable', 'alice']), { said: /^disabled alice; revoked 3 sessions\n$/, reasons: ['account_disabled', 'session_revoked'], i: 1, latest })
    t.same(await rotatedAfterRevocation(url), [], 'no session rotated after its revocation')
    t.equal(stderrOf(procs), '', 'no errors logged by either process')
    await assertLineage(t, url)
  })

  t.test('negative control: without the compare-and-set, a rotation lands after the revocation', async (t) => {
    const url = await seed(t)
    const env = { TOKENLINE_TEST_NO_CAS: '1' }
    const [a, b] = await Promise.all([startFixture(t, url, { env }), startFixture(t, url, { env })])
    // The revocation must commit between the refresh's read and its write, a window of one round trip:
    // a round in ten or so hits it. Rounds run until the check fires, a bounded number of them.
    let rounds = 0
    let late: string[] = []
    while (rounds < CONTROL_ROUNDS && late.length === 0) {
      await revocationRound(t, a, b, KINDS[rounds % KINDS.length] as Revocation, rounds)
      rounds++
      late = await rotatedAfterRevocation(url)
    }
    t.comment(`no compare-and-set: a session rotated after its revocation in round ${rounds}`)
    t.ok(late.length > 0, `the event-order check detects the missing compare-and-set within ${CONTROL_ROUNDS} rounds`)
  })
}
