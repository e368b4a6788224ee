/*
 * Group commit: the rotations that reach the SQLite store in one turn of the event loop share one
 * transaction. Sharing a commit must not share a fate: each rotation is still exactly-once, one that
 * fails rolls back alone, and two rotations of one token in the same batch behave as if they had come
 * one after the other.
 *
 * Checked against the bug it guards: with the batch calling the rotation without its savepoint, the
 * third test fails (the failed rotation's token stays consumed and its session advanced).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import type { RefreshVerdict, Store } from '../db/store.js'
import { openDatabase } from '../db/sqlite/database.js'
import { createStore } from '../db/sqlite/store.js'
import { digest, newRefreshToken, randomId, sealSuccessor } from '../server/tokens/refresh-format.js'

const NOW = Date.UTC(2026, 0, 1)
const META = { ip: '127.0.0.1', userAgent: 'group-commit-test', deviceId: null }

async function setup (t: Test): Promise<{ store: Store, file: string, sessions: Array<{ id: string, token: string }> }> {
  const dir = mkdtempSync(join(tmpdir(), 'tokenline-group-commit-'))
  const file = join(dir, 'db.sqlite')
  const store = createStore(openDatabase(file))
  t.teardown(() => { store.close(); rmSync(dir, { recursive: true, force: true }) })
  await store.createUser({ id: 'u1', username: 'alice', passwordHash: 'unused', now: NOW })
  await store.createClient({ id: 'app', secretDigest: null, delivery: 'body', grants: 'password refresh_token', scopes: '', origins: '', accessTtl: null, idleTtl: null, sessionTtl: null, now: NOW })
  const sessions = []
  for (let i = 0; i < 8; i++) {
    const token = newRefreshToken()
    const id = randomId()
    await store.startSession({ id, userId: 'u1', clientId: 'app', scope: '', meta: META, now: NOW, idleExpiresAt: NOW + 3600e3, expiresAt: NOW + 3600e3, tokenDigest: digest(token), events: [] })
    sessions.push({ id, token })
  }
  return { store, file, sessions }
}

/** A rotation of `token`, deciding with `decide` (rotate unless consumed, then reject). */
function rotation (token: string, decide?: () => RefreshVerdict) {
  const child = newRefreshToken()
  return {
    child,
    input: {
      digest: digest(token),
      now: NOW + 1000,
      meta: META,
      childDigest: digest(child),
      sealed: sealSuccessor(token, child),
      decide: decide ?? (({ token: record }: { token: { usedAt: number | null } }): RefreshVerdict =>
        record.usedAt === null
          ? { kind: 'rotate', idleExpiresAt: NOW + 3600e3, events: [{ type: 'token_rotated' }] }
          : { kind: 'reject', events: [] })
    }
  }
}

t.test('rotations that arrive together each commit exactly once', async (t) => {
  const { store, sessions } = await setup(t)
  const rotations = sessions.map((s) => rotation(s.token))
  const results = await Promise.all(rotations.map((r) => store.refresh(r.input)))
  t.same(results.map((r) => r.kind), sessions.map(() => 'rotated'), 'every rotation of the batch succeeded')
  for (const [i, s] of sessions.entries()) {
    const lineage = await store.lineage(s.id)
    t.equal(lineage.length, 2, `session ${i}: the parent and one child`)
    t.ok(lineage[1]?.digest.equals(digest(rotations[i]!.child)), `session ${i}: the child is the one this rotation issued`)
  }
})

t.test('two rotations of one token in one batch: the first rotates, the second sees it consumed', async (t) => {
  const { store, sessions } = await setup(t)
  const [a, b] = [rotation(sessions[0]!.token), rotation(sessions[0]!.token)]
  const [ra, rb] = await Promise.all([store.refresh(a.input), store.refresh(b.input)])
  t.equal(ra.kind, 'rotated', 'the first in arrival order rotates')
  t.equal(rb.kind, 'rejected', 'the second finds the token already used')
  const lineage = await store.lineage(sessions[0]!.id)
  t.equal(lineage.length, 2, 'one child only')
  t.ok(lineage[1]?.digest.equals(digest(a.child)), 'the child is the first rotation\'s')
})

t.test('a rotation that throws rolls back alone; the rest of its batch commits', async (t) => {
  const { store, sessions } = await setup(t)
  const good = sessions.slice(1).map((s) => rotation(s.token))
  // It fails after writing: the token is consumed and the session advanced before inserting a child
  // whose digest already exists (another session's token), which the primary key refuses.
  const bad = rotation(sessions[0]!.token)
  bad.input.childDigest = digest(sessions[1]!.token)
  const settled = await Promise.allSettled([bad, ...good].map((r) => store.refresh(r.input)))
  t.equal(settled[0]?.status, 'rejected', 'the failing rotation rejects')
  t.match((settled[0] as PromiseRejectedResult).reason, { code: /^SQLITE_CONSTRAINT/ }, 'with its own error')
  t.same(settled.slice(1).map((s) => s.status === 'fulfilled' ? s.value.kind : 'rejected'), good.map(() => 'rotated'), 'the others rotated')
  t.equal((await store.lineage(sessions[0]!.id)).length, 1, 'the failed session has no child')
  t.equal((await store.lineage(sessions[0]!.id))[0]?.usedAt, null, 'and its token is not consumed')
  t.equal((await store.findSession(sessions[0]!.id))?.generation, 0, 'nor its session advanced')
  for (const s of sessions.slice(1)) t.equal((await store.lineage(s.id)).length, 2, 'each other session has its child')
  // The failed token still works afterwards.
  t.equal((await store.refresh(rotation(sessions[0]!.token).input)).kind, 'rotated', 'the failed token rotates on a later try')
})

t.test('a failed commit fails every rotation of the batch and writes none', async (t) => {
  const { store, file, sessions } = await setup(t)
  const rotations = sessions.map((s) => rotation(s.token))
  const pending = rotations.map((r) => store.refresh(r.input))
  // The batch runs on the next turn of the event loop; closing the database first makes it fail.
  store.close()
  const settled = await Promise.allSettled(pending)
  t.same(settled.map((s) => s.status), sessions.map(() => 'rejected'), 'every caller is told')
  const reopened = createStore(openDatabase(file))
  t.teardown(() => reopened.close())
  for (const s of sessions) t.equal((await reopened.lineage(s.id)).length, 1, 'no child was written')
})
