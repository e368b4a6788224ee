import Database from 'better-sqlite3'
import pg from 'pg'
import type { Test } from 'tap'
import { openStore } from '../db/open.js'
import { createPasswords } from '../server/security/passwords.js'
import { digest } from '../server/tokens/refresh-format.js'
import { CHEAP_ARGON2, PASSWORD, sidOf, type TokenBody } from './helpers.js'
import { lineageViolations } from './invariants.js'
import { postForm, sendForm, type Fixture, type Run } from './processes.js'

/*
 * The cross-process races shared by test/concurrency.test.ts and test/revoke-race.test.ts (SQLite) and
 * test/postgres-races.test.ts (PostgreSQL): requests to server processes started with startFixture,
 * one race round and what it left in the database, and the check that nothing of a revoked session
 * still works. The database is a SQLite file or a postgres:// URL.
 */

export const RACE_UA = 'tokenline-concurrency-test/1'

/** Seeds `database` (a SQLite file or a postgres:// URL) with user alice and the public body client `cli`, as the processes will find them. */
export async function seedAlice (database: string): Promise<void> {
  const store = await openStore(database, { pgPoolSize: 1, pgStatementTimeoutMs: 30_000 })
  try {
    const now = Date.now()
    await store.createUser({ id: 'alice-id', username: 'alice', passwordHash: await createPasswords(CHEAP_ARGON2).hash(PASSWORD), now })
    await store.createClient({ id: 'cli', secretDigest: null, delivery: 'body', grants: 'password refresh_token', scopes: 'read write', origins: '', accessTtl: null, idleTtl: null, sessionTtl: null, now })
  } finally {
    await store.close()
  }
}

export interface Reply { status: number, body: string }

/** POST /token to one process, on a connection of its own; a request cut off fails the test run. */
export async function postToken (proc: Fixture, params: Record<string, string>): Promise<Reply> {
  const o = await sendForm(`${proc.url}/token`, params, { 'user-agent': RACE_UA }).outcome
  if (o.kind === 'cut') throw new Error(`request cut off: ${o.error}`)
  return o
}

/** alice logs in on server process `proc` (as the race's user agent): her refresh token. */
export async function loginToken (proc: Fixture): Promise<string> {
  const res = await postToken(proc, { grant_type: 'password', client_id: 'cli', username: 'alice', password: PASSWORD })
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${res.body}`)
  return (JSON.parse(res.body) as { refresh_token: string }).refresh_token
}

export interface Round {
  statuses: Record<number, number>
  /** Distinct refresh tokens handed out by the 200 responses. */
  successors: string[]
  /** invalid_grant reasons of the 4xx responses. */
  reasons: string[]
  serverErrors: number
  busyInBody: number
  violations: string[]
  /** Generation of the session's live token after the round, and how many tokens it has. */
  generation: number
  lineage: number
}

const isPostgres = (database: string): boolean => /^postgres(ql)?:\/\//.test(database)

const POSITION = `SELECT s.generation, (SELECT count(*) FROM refresh_tokens r WHERE r.session_id = s.id) AS n
  FROM sessions s JOIN refresh_tokens t ON t.session_id = s.id WHERE t.digest = `

/** The generation of the session `token` belongs to, and how many tokens that session has (-1, -1 if unknown). */
export async function tokenPosition (database: string, token: string): Promise<{ generation: number, lineage: number }> {
  let row: { generation: number | string, n: number | string } | undefined
  if (isPostgres(database)) {
    const c = new pg.Client({ connectionString: database })
    await c.connect()
    try {
      row = (await c.query<{ generation: number, n: string }>(`${POSITION}$1`, [digest(token)])).rows[0]
    } finally {
      await c.end()
    }
  } else {
    const db = new Database(database, { readonly: true, fileMustExist: true })
    try {
      row = db.prepare<[Buffer], { generation: number, n: number }>(`${POSITION}?`).get(digest(token))
    } finally {
      db.close()
    }
  }
  return { generation: Number(row?.generation ?? -1), lineage: Number(row?.n ?? -1) }
}

/** Fires `parallel` refreshes of `token`, request i to process i mod n, then looks at the database. */
export async function race (procs: Fixture[], database: string, token: string, parallel: number): Promise<Round> {
  const replies = await Promise.all(Array.from({ length: parallel }, async (_, i) =>
    await postToken(procs[i % procs.length] as Fixture, { grant_type: 'refresh_token', client_id: 'cli', refresh_token: token })))
  const round: Round = { statuses: {}, successors: [], reasons: [], serverErrors: 0, busyInBody: 0, violations: [], generation: -1, lineage: -1 }
  const successors = new Set<string>()
  for (const r of replies) {
    round.statuses[r.status] = (round.statuses[r.status] ?? 0) + 1
    if (r.status >= 500) round.serverErrors++
    if (/SQLITE_BUSY|database is locked/i.test(r.body)) round.busyInBody++
    const body = JSON.parse(r.body) as { refresh_token?: string, reason?: string, error?: string }
    if (r.status === 200 && body.refresh_token !== undefined) successors.add(body.refresh_token)
    if (r.status >= 400 && r.status < 500) round.reasons.push(`${body.error ?? '?'}/${body.reason ?? '?'}`)
  }
  round.successors = [...successors]
  round.violations = await lineageViolations(database)
  Object.assign(round, await tokenPosition(database, token))
  return round
}

/**
 * PostgreSQL: the sessions whose lineage grew after their revocation, i.e. with a `token_rotated`
 * event recorded after their first `session_revoked` one. Every writer records its events while it
 * holds the session's row lock, so the order of the two ids is the order in which the writes took
 * effect.
 */
export async function rotatedAfterRevocation (url: string): Promise<string[]> {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    const { rows } = await c.query<{ session_id: string }>(`SELECT DISTINCT e.session_id FROM security_events e
      WHERE e.type = 'token_rotated' AND e.id > (SELECT min(r.id) FROM security_events r WHERE r.session_id = e.session_id AND r.type = 'session_revoked')`)
    return rows.map((r) => r.session_id)
  } finally {
    await c.end()
  }
}

/** alice logs in on server process `p` (fetch's own user agent). */
export async function loginAt (p: Fixture): Promise<{ access_token: string, refresh_token: string }> {
  const r = await postForm<{ access_token: string, refresh_token: string }>(`${p.url}/token`, { grant_type: 'password', client_id: 'cli', username: 'alice', password: PASSWORD })
  if (r.status !== 200) throw new Error(`login: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body
}

/** A refresh of `rt` on server process `p`. */
export const refreshAt = async (p: Fixture, rt: string): Promise<{ status: number, body: TokenBody }> =>
  await postForm(`${p.url}/token`, { grant_type: 'refresh_token', client_id: 'cli', refresh_token: rt })

/** The status GET /sessions answers with access token `at`. */
export async function sessionsStatus (p: Fixture, at: string): Promise<number> {
  return (await fetch(`${p.url}/sessions`, { headers: { authorization: `Bearer ${at}` } })).status
}

/** After the race: the session is revoked, and every token the race produced is dead everywhere. */
export async function assertNothingSurvives (t: Test, procs: Fixture[], tokens: { rts: string[], ats: string[] }, label: string): Promise<boolean> {
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

/**
 * How another process ends the session a refresh is racing (RFC 7009 §2.1 for the first three): revoking
 * its live refresh token, its access token or its consumed parent at /token/revoke; ending it through
 * the sessions API from another session of the user (DELETE /sessions/:id); or ending every other
 * session of the user that way (DELETE /sessions?scope=others).
 */
export type Revocation = 'refresh token' | 'access token' | 'consumed refresh token' | 'sessions API' | 'sessions API, all others'

/**
 * One round: alice logs in on `a` and refreshes once; then `a` refreshes the new token while `b` ends
 * the session at the same instant. Whichever commits first, the revocation succeeds, a refresh that
 * lost is refused as revoked, and afterwards no token of the session works on either process.
 */
export async function revocationRound (t: Test, a: Fixture, b: Fixture, kind: Revocation, i: number): Promise<{ refreshFirst: boolean, clean: boolean }> {
  const s = await loginAt(a)
  const one = await refreshAt(a, s.refresh_token)
  if (one.status !== 200) throw new Error(JSON.stringify(one.body))
  const other = kind === 'sessions API' || kind === 'sessions API, all others' ? await loginAt(b) : undefined
  const rt = one.body.refresh_token as string

  // Both requests leave at once: A rotates `rt` while B ends the session.
  const revokeRequest = (): Promise<number> => {
    const bearer = { authorization: `Bearer ${other?.access_token as string}` }
    switch (kind) {
      case 'refresh token': return postForm(`${b.url}/token/revoke`, { client_id: 'cli', token: rt }).then((r) => r.status)
      case 'access token': return postForm(`${b.url}/token/revoke`, { client_id: 'cli', token: one.body.access_token as string }).then((r) => r.status)
      case 'consumed refresh token': return postForm(`${b.url}/token/revoke`, { client_id: 'cli', token: s.refresh_token }).then((r) => r.status)
      case 'sessions API': return fetch(`${b.url}/sessions/${sidOf(s.access_token)}`, { method: 'DELETE', headers: bearer }).then((r) => r.status)
      case 'sessions API, all others': return fetch(`${b.url}/sessions?scope=others`, { method: 'DELETE', headers: bearer }).then((r) => r.status)
    }
  }
  const [raced, revokeStatus] = await Promise.all([refreshAt(a, rt), revokeRequest()])
  t.equal(revokeStatus, kind === 'sessions API' ? 204 : 200, `round ${i} (${kind}): the revocation succeeds`)
  if (raced.status !== 200) t.equal(raced.body.reason, 'session_revoked', `round ${i}: a refresh that lost the race is refused as revoked`)
  const tokens = { rts: [s.refresh_token, rt], ats: [s.access_token, one.body.access_token as string] }
  if (raced.status === 200) { tokens.rts.push(raced.body.refresh_token as string); tokens.ats.push(raced.body.access_token as string) }
  const clean = await assertNothingSurvives(t, [a, b], tokens, `round ${i} (${kind})`)
  return { refreshFirst: raced.status === 200, clean }
}

/**
 * One round of a revocation by the CLI (a process of its own): three sessions of alice, logged in
 * round-robin on `procs`, each refresh themselves in a loop on the process they logged in on until
 * `revoke()` returns. Each loop ends on a refusal with one of `reasons` (or is stopped); the command's
 * output matches `said`; and afterwards none of the tokens issued works on any of `procs`. With
 * `latest`, only each session's `latest` newest refresh and access tokens are tried: the older refresh
 * tokens are consumed and beyond any grace, and an access token is only as live as the session it
 * names, so those cover what could survive while keeping a long loop's check short.
 */
export async function cliRevocationRound (
  t: Test, procs: Fixture[], revoke: () => Promise<Run>, { said, reasons, i, latest }: { said: RegExp, reasons: string[], i: number, latest?: number }
): Promise<void> {
  const sessions = await Promise.all([0, 1, 2].map(async (j) => ({ at: procs[j % procs.length] as Fixture, ...await loginAt(procs[j % procs.length] as Fixture) })))
  // A refresh loop on every session runs until the CLI's revocation lands.
  const race = { stop: false }
  const issued = sessions.map((): string[] => [])
  const ats = sessions.map((): string[] => [])
  const loops = sessions.map(async (s, j) => {
    let rt = s.refresh_token
    ats[j]?.push(s.access_token)
    while (!race.stop) {
      const r = await refreshAt(s.at, rt)
      if (r.status !== 200) return r.body.reason
      rt = r.body.refresh_token as string
      issued[j]?.push(rt)
      ats[j]?.push(r.body.access_token as string)
    }
    issued[j]?.push(rt)
    return 'stopped'
  })
  const run = await revoke()
  race.stop = true
  const ended = await Promise.all(loops)
  t.equal(run.code, 0, run.stderr)
  t.match(run.stdout, said, `round ${i}: all three sessions revoked`)
  for (const r of ended) t.ok(r === 'stopped' || reasons.includes(r as string), `round ${i}: a loop ends on the revocation (${r as string})`)
  const pick = (lists: string[][]): string[] => lists.flatMap((l) => latest === undefined ? l : l.slice(-latest))
  const n = issued.reduce((sum, l) => sum + l.length, 0)
  t.ok(await assertNothingSurvives(t, procs, { rts: pick(issued), ats: pick(ats) }, `CLI round ${i}`),
    latest === undefined ? `round ${i}: none of ${n} refresh tokens works` : `round ${i}: none of the ${latest} newest tokens of each session works (${n} refresh tokens issued)`)
}
