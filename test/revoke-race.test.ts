import { join } from 'node:path'
import t, { type Test } from 'tap'
import { PASSWORD } from './helpers.js'
import { assertLineage } from './invariants.js'
import { addAliceAndCli, CHEAP_ARGON2_ENV, startFixture } from './processes.js'
import { cliRevocationRound, revocationRound, type Revocation } from './races.js'
import { tokenline as cli } from './session-helpers.js'

/*
 * A refresh racing a revocation, across two processes on one database file, many times (RFC 7009 §2.1:
 * the revocation takes effect at once): whichever commits first, no token of a revoked session may work
 * afterwards. Process A serves the refreshes; process B (or the CLI, a third process) revokes at the
 * same instant.
 */

const ROUNDS = 40

/** A fresh database file with alice and the public body client `cli`, made by the CLI. */
async function seed (t: Test): Promise<string> {
  const dbFile = join(t.testdir({}), 'tokenline.db')
  await addAliceAndCli(t, { TOKENLINE_DB: dbFile, ...CHEAP_ARGON2_ENV }, PASSWORD)
  return dbFile
}

t.test('a refresh racing a revocation in another process never leaves a live token', async (t) => {
  const dbFile = await seed(t)
  const a = await startFixture(t, dbFile)
  const b = await startFixture(t, dbFile)

  const outcomes = { refreshFirst: 0, revokeFirst: 0 }
  let clean = true
  const kinds = ['refresh token', 'access token', 'consumed refresh token', 'sessions API'] as const
  for (let i = 0; i < ROUNDS; i++) {
    const r = await revocationRound(t, a, b, kinds[i % kinds.length] as Revocation, i)
    if (r.refreshFirst) outcomes.refreshFirst++
    else outcomes.revokeFirst++
    clean = r.clean && clean
  }
  t.ok(clean, `no token survived any of ${ROUNDS} revocations`)
  t.comment(`refresh committed first ${outcomes.refreshFirst} times, revocation first ${outcomes.revokeFirst} times`)
  t.notMatch(a.stderr() + b.stderr(), /SQLITE_BUSY|error/i, 'no lock errors in either process')
  await assertLineage(t, dbFile)
})

t.test('the CLI revoking every session of a user races refreshes in a server process', async (t) => {
  const dbFile = await seed(t)
  const a = await startFixture(t, dbFile)
  for (let i = 0; i < 4; i++) {
    await cliRevocationRound(t, [a], async () => await cli(dbFile, ['revoke', '--user', 'alice']), { said: /^revoked 3 sessions of alice\n$/, reasons: ['session_revoked'], i })
  }
  await assertLineage(t, dbFile)
})
