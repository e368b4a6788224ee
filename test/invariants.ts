import Database from 'better-sqlite3'
import type { Test } from 'tap'

/*
 * The lineage invariants every test that touches refresh tokens can end with: each session is one
 * chain of rotations (RFC 9700 §4.14.2) with at most one unconsumed token, its newest. They are
 * checked on the database file itself, through a separate read-only connection, so they hold for what
 * is committed on disk, whichever process wrote it.
 */

interface SessionFacts {
  id: string
  generation: number
  revoked_at: number | null
  revoked_reason: string | null
}

interface TokenFacts {
  session_id: string
  generation: number
  parent_generation: number | null
  used_at: number | null
}

/** Every broken invariant, as one line each; an empty list means the lineage is sound. */
export function lineageViolations (dbFile: string): string[] {
  const db = new Database(dbFile, { readonly: true, fileMustExist: true, timeout: 5000 })
  try {
    return check(db)
  } finally {
    db.close()
  }
}

function check (db: Database.Database): string[] {
  const problems: string[] = []
  // One read transaction, so the checks below all see the same snapshot even while servers write.
  db.transaction(() => {
    const integrity = db.pragma('integrity_check', { simple: true })
    if (integrity !== 'ok') problems.push(`integrity_check: ${String(integrity)}`)
    for (const row of db.pragma('foreign_key_check') as Array<{ table: string, parent: string }>) {
      problems.push(`foreign_key_check: a row of ${row.table} points at a missing ${row.parent}`)
    }

    const sessions = db.prepare<[], SessionFacts>('SELECT id, generation, revoked_at, revoked_reason FROM sessions').all()
    const tokens = db.prepare<[], TokenFacts>('SELECT session_id, generation, parent_generation, used_at FROM refresh_tokens ORDER BY session_id, generation').all()
    const bySession = new Map<string, TokenFacts[]>()
    for (const tok of tokens) {
      const list = bySession.get(tok.session_id)
      if (list === undefined) bySession.set(tok.session_id, [tok])
      else list.push(tok)
    }

    for (const s of sessions) {
      const lineage = bySession.get(s.id) ?? []
      bySession.delete(s.id)
      if (s.revoked_at !== null && (s.revoked_reason === null || s.revoked_reason === '')) {
        problems.push(`session ${s.id}: revoked without a reason`)
      }
      if (lineage.length === 0) {
        problems.push(`session ${s.id}: has no refresh token at all`)
        continue
      }
      // Generations are a per-session counter: 0..n with no gap and no duplicate, n the session's.
      const gens = lineage.map((tok) => tok.generation)
      const contiguous = gens.every((g, i) => g === i)
      if (!contiguous || gens.length !== s.generation + 1) {
        problems.push(`session ${s.id}: generations [${gens.join(',')}] are not 0..${s.generation}`)
      }
      const live = lineage.filter((tok) => tok.used_at === null)
      if (live.length > 1) {
        problems.push(`session ${s.id}: ${live.length} unconsumed tokens (generations ${live.map((tok) => tok.generation).join(',')})`)
      }
      for (const tok of live) {
        if (tok.generation !== s.generation) {
          problems.push(`session ${s.id}: unconsumed token of generation ${tok.generation}, but the current generation is ${s.generation}`)
        }
      }
      const byGen = new Map(lineage.map((tok) => [tok.generation, tok]))
      for (const tok of lineage) {
        if (tok.generation === 0) {
          if (tok.parent_generation !== null) problems.push(`session ${s.id}: the login token names parent ${tok.parent_generation}`)
          continue
        }
        if (tok.parent_generation !== tok.generation - 1) {
          problems.push(`session ${s.id}: generation ${tok.generation} names parent ${String(tok.parent_generation)}`)
          continue
        }
        const parent = byGen.get(tok.parent_generation)
        if (parent === undefined) problems.push(`session ${s.id}: generation ${tok.generation} has no parent row`)
        else if (parent.used_at === null) problems.push(`session ${s.id}: generation ${tok.generation} exists but its parent is unconsumed`)
      }
    }
    // Whatever is left belongs to no session.
    for (const [sessionId, orphans] of bySession) {
      problems.push(`${orphans.length} orphan refresh token(s) of missing session ${sessionId}`)
    }
    const orphanSessions = db.prepare<[], { id: string }>(`SELECT s.id FROM sessions s
      WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = s.user_id) OR NOT EXISTS (SELECT 1 FROM clients c WHERE c.id = s.client_id)`).all()
    for (const s of orphanSessions) problems.push(`session ${s.id}: its user or client is missing`)
  }).deferred()
  return problems
}

/** Asserts the lineage invariants on `dbFile` as one tap assertion that lists what broke. */
export function assertLineage (t: Test, dbFile: string, message = 'lineage invariants hold'): boolean {
  const problems = lineageViolations(dbFile)
  return t.same(problems, [], message)
}
