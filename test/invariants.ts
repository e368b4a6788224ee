import Database from 'better-sqlite3'
import pg from 'pg'
import type { Test } from 'tap'

/*
 * The lineage invariants every test that touches refresh tokens can end with: each session is one
 * chain of rotations (RFC 9700 §4.14.2) with at most one unconsumed token, its newest. They are
 * checked on the database itself (a SQLite file, or a postgres:// URL), through a separate read-only
 * connection and one snapshot, so they hold for what is committed, whichever process wrote it.
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

const SESSIONS = 'SELECT id, generation, revoked_at, revoked_reason FROM sessions'
const TOKENS = 'SELECT session_id, generation, parent_generation, used_at FROM refresh_tokens ORDER BY session_id, generation'
const ORPHAN_SESSIONS = `SELECT s.id FROM sessions s
  WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = s.user_id) OR NOT EXISTS (SELECT 1 FROM clients c WHERE c.id = s.client_id)`

interface Facts { sessions: SessionFacts[], tokens: TokenFacts[], orphanSessions: Array<{ id: string }>, problems: string[] }

/** Every broken invariant, as one line each; an empty list means the lineage is sound. */
export async function lineageViolations (database: string): Promise<string[]> {
  return check(/^postgres(ql)?:\/\//.test(database) ? await readPostgres(database) : readSqlite(database))
}

function readSqlite (dbFile: string): Facts {
  const db = new Database(dbFile, { readonly: true, fileMustExist: true, timeout: 5000 })
  try {
    // One read transaction, so the checks all see the same snapshot even while servers write.
    return db.transaction((): Facts => {
      const problems: string[] = []
      const integrity = db.pragma('integrity_check', { simple: true })
      if (integrity !== 'ok') problems.push(`integrity_check: ${String(integrity)}`)
      for (const row of db.pragma('foreign_key_check') as Array<{ table: string, parent: string }>) {
        problems.push(`foreign_key_check: a row of ${row.table} points at a missing ${row.parent}`)
      }
      return {
        sessions: db.prepare<[], SessionFacts>(SESSIONS).all(),
        tokens: db.prepare<[], TokenFacts>(TOKENS).all(),
        orphanSessions: db.prepare<[], { id: string }>(ORPHAN_SESSIONS).all(),
        problems
      }
    }).deferred()
  } finally {
    db.close()
  }
}

async function readPostgres (url: string): Promise<Facts> {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    // One snapshot for the three reads; PostgreSQL itself enforces the foreign keys.
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
    const facts = {
      // Times arrive as strings (BIGINT); only whether they are null matters here.
      sessions: (await c.query<SessionFacts>(SESSIONS)).rows,
      tokens: (await c.query<TokenFacts>(TOKENS)).rows,
      orphanSessions: (await c.query<{ id: string }>(ORPHAN_SESSIONS)).rows,
      problems: []
    }
    await c.query('COMMIT')
    return facts
  } finally {
    await c.end()
  }
}

function check ({ sessions, tokens, orphanSessions, problems }: Facts): string[] {
  {
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
    for (const s of orphanSessions) problems.push(`session ${s.id}: its user or client is missing`)
  }
  return problems
}

/** Asserts the lineage invariants on `database` as one tap assertion that lists what broke. */
export async function assertLineage (t: Test, database: string, message = 'lineage invariants hold'): Promise<boolean> {
  return t.same(await lineageViolations(database), [], message)
}
