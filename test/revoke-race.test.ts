import { join } from 'node:path'
import t, { type Test } from 'tap'
import { PASSWORD, sidOf, type TokenBody } from './helpers.js'
import { assertLineage } from './invariants.js'
import { addAliceAndCli, CHEAP_ARGON2_ENV, postForm, startFixture, type Fixture } from './processes.js'
import { tokenline as cli } from './session-helpers.js'

/*
 * A refresh racing a revocation, across two processes on one database file, many times (RFC 7009 §2.1:
 * the revocation takes effect at once): whichever commits first, no token of a revoked session may work
 * afterwards. Process A serves the refreshes; process B (or the CLI, a third process) revokes at the
 * same instant.
 */

const ROUNDS = 40

/** alice logs in on server process `p`. */
async function loginAt (p: Fixture): Promise<{ access_token: string, refresh_token: string }> {
  const r = await postForm<{ access_token: string, refresh_token: string }>(`${p.url}/token`, { grant_type: 'password', client_id: 'cli', username: 'alice', password: PASSWORD })
  if (r.status !== 200) throw new Error(`login: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body
}

/** A refresh of `rt` on server process `p`. */
const refreshAt = async (p: Fixture, rt: string): Promise<{ status: number, body: TokenBody }> =>
  await postForm(`${p.url}/token`, { grant_type: 'refresh_token', client_id: 'cli', refresh_token: rt })

async function sessionsStatus (p: Fixture, at: string): Promise<number> {
  return (await fetch(`${p.url}/sessions`, { headers: { authorization: `Bearer ${at}` } })).status
}

/** A fresh database file with alice and the public body client `cli`, made by the CLI. */
async function seed (t: Test): Promise<string> {
  const dbFile = join(t.testdir({}), 'tokenline.db')
  await addAliceAndCli(t, { TOKENLINE_DB: dbFile, ...CHEAP_ARGON2_ENV }, PASSWORD)
  return dbFile
}

/** After the race: the session is revoked, and every token the race produced is dead everywhere. */
async function assertNothingSurvives (t: Test, procs: Fixture[], tokens: { rts: string[], ats: string[] }, label: string): Promise<boolean> {
  let ok = true
  for (const p of procs) {
    for (const rt of tokens.rts) {
      const r = await refreshAt(p, rt)
      if (r.status !== 400 || r.body.error !== 'invalid_grant') { ok = false; t.fail(`${label}: a refresh token still works (${r.status} ${JSON.stringify(r.body)})`) }
    }
    for (const at of tokens.ats) {
      const s = await sessionsStatus(p, at)
      if (s !== 401) { ok = false; t.fail(`${label}: an access token still opens the sessions API (${s})`) }
    }
  }
  return ok
}

t.test('a refresh racing a revocation in another process never leaves a live token', async (t) => {
  const dbFile = await seed(t)
  const a = await startFixture(t, dbFile)
  const b = await startFixture(t, dbFile)

  const outcomes = { refreshFirst: 0, revokeFirst: 0 }
  let clean = true
  const kinds = ['refresh token', 'access token', 'consumed refresh token', 'sessions API'] as const
  for (let i = 0; i < ROUNDS; i++) {
    const kind = kinds[i % kinds.length] as typeof kinds[number]
    const s = await loginAt(a)
    const one = await refreshAt(a, s.refresh_token)
    if (one.status !== 200) throw new Error(JSON.stringify(one.body))
    const other = kind === 'sessions API' ? await loginAt(b) : undefined
    const rt = one.body.refresh_token as string

    // Both requests leave at once: A rotates `rt` while B ends the session.
    const revokeRequest = (): Promise<number> => {
      switch (kind) {
        case 'refresh token': return postForm(`${b.url}/token/revoke`, { client_id: 'cli', token: rt }).then((r) => r.status)
        case 'access token': return postForm(`${b.url}/token/revoke`, { client_id: 'cli', token: one.body.access_token as string }).then((r) => r.status)
        case 'consumed refresh token': return postForm(`${b.url}/token/revoke`, { client_id: 'cli', token: s.refresh_token }).then((r) => r.status)
        case 'sessions API': return fetch(`${b.url}/sessions/${sidOf(s.access_token)}`, { method: 'DELETE', headers: { authorization: `Bearer ${other?.access_token as string}` } }).then((r) => r.status)
      }
    }
    const [raced, revokeStatus] = await Promise.all([refreshAt(a, rt), revokeRequest()])
    t.equal(revokeStatus, kind === 'sessions API' ? 204 : 200, `round ${i} (${kind}): the revocation succeeds`)
    if (raced.status === 200) outcomes.refreshFirst++
    else {
      outcomes.revokeFirst++
      t.equal(raced.body.reason, 'session_revoked', `round ${i}: a refresh that lost the race is refused as revoked`)
    }
    const tokens = { rts: [s.refresh_token, rt], ats: [s.access_token, one.body.access_token as string] }
    if (raced.status === 200) { tokens.rts.push(raced.body.refresh_token as string); tokens.ats.push(raced.body.access_token as string) }
    clean = await assertNothingSurvives(t, [a, b], tokens, `round ${i} (${kind})`) && clean
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
    const sessions = await Promise.all([loginAt(a), loginAt(a), loginAt(a)])
    // A refresh loop on every session runs until the CLI's revocation lands.
    const race = { stop: false }
    const issued: string[] = []
    const ats: string[] = []
    const loops = sessions.map(async (s) => {
      let rt = s.refresh_token
      ats.push(s.access_token)
      while (!race.stop) {
        const r = await refreshAt(a, rt)
        if (r.status !== 200) return r.body.reason
        rt = r.body.refresh_token as string
        issued.push(rt)
        ats.push(r.body.access_token as string)
      }
      issued.push(rt)
      return 'stopped'
    })
    const revoke = await cli(dbFile, ['revoke', '--user', 'alice'])
    race.stop = true
    const reasons = await Promise.all(loops)
    t.equal(revoke.code, 0, revoke.stderr)
    t.match(revoke.stdout, /^revoked 3 sessions of alice\n$/, `round ${i}: all three sessions revoked`)
    for (const r of reasons) t.ok(r === 'session_revoked' || r === 'stopped', `round ${i}: a loop ends on the revocation (${r as string})`)
    t.ok(await assertNothingSurvives(t, [a], { rts: issued, ats }, `CLI round ${i}`), `round ${i}: none of ${issued.length} refresh tokens works`)
  }
  await assertLineage(t, dbFile)
})
