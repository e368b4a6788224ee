/*
 * `tokenline copy --to <database>`: a move between engines loses nothing a client or an operator can
 * tell. Sessions logged in, rotated, reused and revoked on a real server over SQLite are copied to
 * PostgreSQL and back; on each copy every table holds the same rows, every refresh token a client last
 * received still refreshes, a token consumed before the copy is still caught as reuse, and the CLI's
 * audit trail and lineage read the same.
 */
import Database from 'better-sqlite3'
import { decodeProtectedHeader } from 'jose'
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, symlinkSync } from 'node:fs'
import { join, relative } from 'node:path'
import { PassThrough } from 'node:stream'
import pg from 'pg'
import t, { type Test } from 'tap'
import { openStore } from '../db/open.js'
import { COPY_ORDER, COPY_TABLES } from '../db/rows.js'
import { openDatabase } from '../db/sqlite/database.js'
import { main } from '../server/cli/index.js'
import { basicAuth, sidOf, type TokenBody } from './helpers.js'
import { assertLineage } from './invariants.js'
import { postgres, type PgServer } from './postgres.js'
import { addAliceAndCli, CHEAP_ARGON2_ENV, mapLimit, postForm, ROOT, runCli, startServer, tempDir, type Run, type Server } from './processes.js'

const PW = 'copy test password'
/** No grace: a consumed token presented again is reuse at once. No throttling of the test's own requests. */
const ENV = { ...CHEAP_ARGON2_ENV, TOKENLINE_REUSE_GRACE: '0', TOKENLINE_THROTTLE_PASSWORD: '0', TOKENLINE_THROTTLE_FAILURES: '0' }

const isPg = (database: string): boolean => /^postgres(ql)?:\/\//.test(database)

type Dump = Record<string, string[]>

/**
 * Every row of every table, each as one canonical line (BLOB/BYTEA as hex, numbers as text, whatever
 * the driver returns), sorted: two databases hold the same rows exactly when their dumps are equal.
 */
async function dump (database: string): Promise<Dump> {
  const line = (row: Record<string, unknown>, columns: readonly string[]): string => JSON.stringify(columns.map((c) => {
    const v = row[c]
    return v === null ? null : Buffer.isBuffer(v) ? `x${v.toString('hex')}` : String(v)
  }))
  const out: Dump = {}
  if (isPg(database)) {
    const c = new pg.Client({ connectionString: database })
    await c.connect()
    try {
      for (const kind of COPY_ORDER) {
        const { columns } = COPY_TABLES[kind]
        out[kind] = (await c.query(`SELECT ${columns.join(', ')} FROM ${kind}`)).rows.map((r) => line(r, columns)).sort()
      }
    } finally {
      await c.end()
    }
    return out
  }
  const db = new Database(database, { readonly: true, fileMustExist: true })
  try {
    for (const kind of COPY_ORDER) {
      const { columns } = COPY_TABLES[kind]
      // A SQLite schema before the budgets migration has no budgets table: no budgets.
      const exists = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(kind) !== undefined
      out[kind] = exists ? (db.prepare(`SELECT ${columns.join(', ')} FROM ${kind}`).all() as Array<Record<string, unknown>>).map((r) => line(r, columns)).sort() : []
    }
  } finally {
    db.close()
  }
  return out
}

const counts = (d: Dump): Record<string, number> => Object.fromEntries(Object.entries(d).map(([k, rows]) => [k, rows.length]))

/** Runs one CLI command in this process (the same `main` as bin/tokenline.js): its exit status and output. */
async function cliHere (database: string, args: string[]): Promise<Run> {
  const out = new PassThrough()
  const err = new PassThrough()
  let stdout = ''
  let stderr = ''
  out.on('data', (c: Buffer) => { stdout += c.toString() })
  err.on('data', (c: Buffer) => { stderr += c.toString() })
  const code = await main(args, { stdin: new PassThrough(), stdout: out, stderr: err, env: { ...ENV, TOKENLINE_DB: database } })
  return { code, stdout, stderr }
}

/** What an operator sees: the audit trail and each session's lineage, as the CLI prints them. */
async function operatorView (t: Test, database: string, sids: string[]): Promise<string[]> {
  const outputs: string[] = []
  for (const args of [['events', '--limit', '10000'], ...sids.map((sid) => ['lineage', sid])]) {
    const r = await cliHere(database, args)
    if (r.code !== 0) t.fail(`${args.join(' ')}: exit ${String(r.code)} (${r.stderr.trim()})`)
    outputs.push(r.stdout)
  }
  return outputs
}

/** Runs `tokenline copy --to <to>` on `from` and checks it succeeded and said so, table by table, without a password. */
async function copy (t: Test, from: string, to: string, secret: string | undefined): Promise<Run> {
  const r = await runCli(['copy', '--to', to], { env: { ...ENV, TOKENLINE_DB: from } })
  t.equal(r.code, 0, `copy exits 0 (${r.stderr.trim()})`)
  t.equal(r.stderr, '', 'nothing on stderr')
  const lines = r.stdout.trimEnd().split('\n')
  t.same(lines.slice(0, -1).map((l) => l.split(/\s+/)[0]), COPY_ORDER, 'one line per table, in copy order')
  t.match(lines.at(-1), /^copied \d+ rows from \S+ to \S+$/, 'and a final line')
  if (secret !== undefined) t.notOk(r.stdout.includes(secret), 'the PostgreSQL password is never printed')
  return r
}

type Grant = (params: Record<string, string>, client?: 'cli' | 'svc') => Promise<{ status: number, body: TokenBody }>

function grants (server: Server, svcSecret: string): { token: Grant, login: (client?: 'cli' | 'svc') => Promise<TokenBody>, refresh: Grant } {
  const token: Grant = async (params, client = 'cli') => await postForm(`${server.url}/token`,
    client === 'cli' ? { ...params, client_id: 'cli' } : params,
    client === 'svc' ? { authorization: basicAuth('svc', svcSecret) } : {})
  return {
    token,
    async login (client = 'cli') {
      const r = await token({ grant_type: 'password', username: 'alice', password: PW }, client)
      if (r.status !== 200) throw new Error(`login failed: ${JSON.stringify(r.body)}`)
      return r.body
    },
    refresh: async (params, client) => await token({ grant_type: 'refresh_token', ...params }, client)
  }
}

/** The refresh token of a response. */
const rt = (body: TokenBody): string => body.refresh_token as string

/** Refreshes `token`: 200 with a new refresh token, which it returns. */
async function refreshes (t: Test, g: ReturnType<typeof grants>, token: string, label: string, client?: 'cli' | 'svc'): Promise<string> {
  const r = await g.refresh({ refresh_token: token }, client)
  t.equal(r.status, 200, r.status === 200 ? `${label}: refreshes` : `${label}: refreshes (${JSON.stringify(r.body)})`)
  return rt(r.body)
}

/** Presents `token` and expects invalid_grant with `reason`. */
async function refused (t: Test, g: ReturnType<typeof grants>, token: string, reason: string, description: RegExp, label: string): Promise<void> {
  const r = await g.refresh({ refresh_token: token })
  t.equal(r.status, 400, `${label}: 400`)
  t.has(r.body, { error: 'invalid_grant', reason }, `${label}: invalid_grant, ${reason}`)
  t.match(r.body.error_description, description, label)
}

/** The highest id and the number of `security_events` rows, read directly. */
async function eventIds (database: string): Promise<{ max: number, n: number }> {
  const d = await dump(database)
  const ids = (d.security_events ?? []).map((l) => Number((JSON.parse(l) as string[])[0]))
  return { max: Math.max(0, ...ids), n: ids.length }
}

/** The tests that need PostgreSQL, on one server (skipped together when there is none, see test/postgres.ts). */
t.test('with PostgreSQL', async (t) => {
  const server = await postgres(t)
  if (server === undefined) return
  t.test('SQLite -> PostgreSQL -> SQLite with live sessions: every token keeps its meaning', async (t) => await moveAndBack(t, server))
  t.test('thousands of rows: the export pages by primary key, and every row arrives once', async (t) => await manyRows(t, server))
})

async function moveAndBack (t: Test, server: PgServer): Promise<void> {
  // A password in the URL to look for in the output: trust authentication ignores it on a cluster of our own.
  let pgUrl = await server.database(t)
  let secret: string | undefined = new URL(pgUrl).password
  if (secret === '' && server.stop !== undefined) {
    const u = new URL(pgUrl)
    u.password = secret = 'never-printed-pw'
    pgUrl = u.toString()
  }
  if (secret === '') secret = undefined
  const dir = tempDir(t)
  const src = join(dir, 'source.db')
  const dst = join(dir, 'back.db')

  // Users and clients by the CLI: alice, the public client cli, the confidential client svc.
  await addAliceAndCli(t, { ...ENV, TOKENLINE_DB: src }, PW)
  const svc = await cliHere(src, ['client', 'add', 'svc', '--confidential', '--delivery', 'body'])
  t.equal(svc.code, 0, svc.stderr)
  const svcSecret = /client_secret: (\S+)/.exec(svc.stdout)?.[1] ?? ''

  // Sessions on a real server over the SQLite file.
  const one = await startServer(t, { ...ENV, TOKENLINE_DB: src })
  const g1 = grants(one, svcSecret)
  const A = await g1.login()
  const a1 = await refreshes(t, g1, rt(A), 'A gen 0')
  const a2 = await refreshes(t, g1, a1, 'A gen 1')
  const B = await g1.login()
  const b1 = await refreshes(t, g1, rt(B), 'B gen 0')
  await refused(t, g1, rt(B), 'reuse_detected', /already used/, 'B: its consumed token replayed')
  const C = await g1.login()
  const D = await g1.login('svc')
  const E = await g1.login()
  const e1 = await refreshes(t, g1, rt(E), 'E gen 0')
  const F = await g1.login()
  const f1 = await refreshes(t, g1, rt(F), 'F gen 0')
  const failed = await g1.token({ grant_type: 'password', username: 'mallory', password: 'not the password' })
  t.equal(failed.body.error, 'invalid_grant', 'a failed login (recorded in login_failures)')
  const kid = decodeProtectedHeader(A.access_token).kid
  await one.stop()
  const revokeC = await cliHere(src, ['revoke', '--session', sidOf(C)])
  t.equal(revokeC.code, 0, revokeC.stderr)
  const sids = [A, B, C, D, E, F].map((s) => sidOf(s))

  const source = await dump(src)
  t.ok(source.login_failures?.length === 1 && (source.security_events?.length ?? 0) > 10 && source.refresh_tokens?.length === 11, 'the source holds what the test did')
  const seen = await operatorView(t, src, sids)
  await assertLineage(t, src, 'the source lineage is sound')

  // SQLite -> PostgreSQL.
  await copy(t, src, pgUrl, secret)
  const copied = await dump(pgUrl)
  const [again, itself] = await mapLimit([src, pgUrl], 2, async (from) => await runCli(['copy', '--to', pgUrl], { env: { ...ENV, TOKENLINE_DB: from } }))
  assertRefused(t, again as Run, /is not empty/, 'a second copy into the PostgreSQL database')
  assertRefused(t, itself as Run, /names the database being copied/, 'a copy of the PostgreSQL database into itself')
  if (secret !== undefined) t.notOk(`${again?.stderr ?? ''}${itself?.stderr ?? ''}`.includes(secret), 'no password in the refusals')
  t.same(await dump(pgUrl), copied, 'the refusals left the PostgreSQL database unchanged')
  t.same(counts(await dump(pgUrl)), counts(source), 'PostgreSQL: the same row count in every table')
  t.same(await dump(pgUrl), source, 'PostgreSQL: the same rows, column for column (ids, times, digests, marks, sealed successors)')
  t.same(await operatorView(t, pgUrl, sids), seen, 'PostgreSQL: tokenline events and lineage print the same')
  await assertLineage(t, pgUrl, 'PostgreSQL: lineage invariants hold')
  const before = await eventIds(pgUrl)

  const two = await startServer(t, { ...ENV, TOKENLINE_DB: pgUrl })
  const g2 = grants(two, svcSecret)
  const a3 = await refreshes(t, g2, a2, 'PostgreSQL: A, its last token')
  const d1 = await refreshes(t, g2, rt(D), 'PostgreSQL: D, the confidential client\'s, never rotated', 'svc')
  const f2 = await refreshes(t, g2, f1, 'PostgreSQL: F, its last token')
  await refused(t, g2, rt(E), 'reuse_detected', /already used/, 'PostgreSQL: E\'s token consumed before the copy is reuse')
  await refused(t, g2, e1, 'reuse_detected', /session has been revoked/, 'PostgreSQL: ...which revoked E, its last token too')
  await refused(t, g2, b1, 'reuse_detected', /session has been revoked/, 'PostgreSQL: B stays revoked for reuse')
  await refused(t, g2, rt(C), 'session_revoked', /session has been revoked/, 'PostgreSQL: C stays revoked')
  const fresh = await g2.login('svc')
  t.equal(decodeProtectedHeader(fresh.access_token).kid, kid, 'PostgreSQL: the copied signing key signs (no new key was made)')
  await two.stop()
  const after = await eventIds(pgUrl)
  t.ok(after.max > before.max && after.n > before.n && after.max - before.max === after.n - before.n,
    `PostgreSQL: new events numbered on from the copied ones (max ${before.max} -> ${after.max}, ${before.n} -> ${after.n} rows)`)

  // PostgreSQL -> a new SQLite file.
  const pgRows = await dump(pgUrl)
  const pgSeen = await operatorView(t, pgUrl, sids)
  await copy(t, pgUrl, dst, secret)
  t.same(counts(await dump(dst)), counts(pgRows), 'SQLite again: the same row count in every table')
  t.same(await dump(dst), pgRows, 'SQLite again: the same rows, column for column')
  t.same(await operatorView(t, dst, sids), pgSeen, 'SQLite again: tokenline events and lineage print the same')
  await assertLineage(t, dst, 'SQLite again: lineage invariants hold')

  const three = await startServer(t, { ...ENV, TOKENLINE_DB: dst })
  const g3 = grants(three, svcSecret)
  await refreshes(t, g3, a3, 'SQLite again: A, the token PostgreSQL issued last')
  await refreshes(t, g3, d1, 'SQLite again: D', 'svc')
  await refused(t, g3, f1, 'reuse_detected', /already used/, 'SQLite again: F\'s token consumed on PostgreSQL is reuse')
  await refused(t, g3, f2, 'reuse_detected', /session has been revoked/, 'SQLite again: ...which revoked F')
  await refused(t, g3, e1, 'reuse_detected', /session has been revoked/, 'SQLite again: E stays revoked')
  t.equal((await g3.token({ grant_type: 'password', username: 'alice', password: PW })).status, 200, 'SQLite again: alice logs in')
  await three.stop()
  await assertLineage(t, dst, 'SQLite again: lineage invariants hold after use')
}

/** A refused copy: non-zero exit, one line on stderr, nothing on stdout. */
function assertRefused (t: Test, r: Run, message: RegExp, label: string): void {
  t.not(r.code, 0, `${label}: non-zero exit`)
  t.ok(r.code !== null && r.code < 128, `${label}: an exit, not a crash`)
  t.match(r.stderr, /^tokenline: [^\n]+\n$/, `${label}: one line on stderr (${JSON.stringify(r.stderr.slice(0, 300))})`)
  t.match(r.stderr, message, `${label}: says why`)
  t.equal(r.stdout, '', `${label}: nothing on stdout`)
}

t.test('copy refuses a non-empty target, the source itself, and a missing source', async (t) => {
  const dir = tempDir(t)
  const src = join(dir, 'source.db')
  const other = join(dir, 'other.db')
  await addAliceAndCli(t, { ...ENV, TOKENLINE_DB: src }, PW)
  await addAliceAndCli(t, { ...ENV, TOKENLINE_DB: other }, PW)
  const cli = async (database: string, args: string[]): Promise<Run> => await runCli(args, { env: { ...ENV, TOKENLINE_DB: database } })
  const srcBytes = readFileSync(src)
  const otherBytes = readFileSync(other)

  const link = join(dir, 'link.db')
  symlinkSync(src, link)
  const missing = join(dir, 'missing.db')
  const target = join(dir, 'target.db')
  // Each refusal only reads, so they run two at a time.
  const cases: Array<[string, string[], RegExp, string]> = [
    [src, ['copy', '--to', other], /other\.db is not empty/, 'a non-empty target'],
    [src, ['copy', '--to', src], /names the database being copied/, 'the source itself'],
    [src, ['copy', '--to', link], /names the database being copied/, 'the source through a symbolic link'],
    [relative(ROOT, src), ['copy', '--to', src], /names the database being copied/, 'the source by another path'],
    [missing, ['copy', '--to', target], /missing\.db does not exist/, 'a missing source'],
    [src, ['copy'], /usage: tokenline copy --to <database>/, 'no --to'],
    [src, ['copy', '--to', target, 'extra'], /usage/, 'an extra argument']
  ]
  const results = await mapLimit(cases, 2, async ([database, args]) => await cli(database, args))
  cases.forEach(([, , message, label], i) => assertRefused(t, results[i] as Run, message, label))
  t.same(readFileSync(other), otherBytes, 'the non-empty target is unchanged')
  t.same(readFileSync(src), srcBytes, 'the source is unchanged')
  t.notOk(existsSync(missing), 'the missing source is not created')
  t.notOk(existsSync(target), 'no refused copy created the target')
  const help = await cliHere(src, ['help'])
  t.match(help.stdout, /^ {2}copy --to <database> /m, 'tokenline help lists copy')
})

async function manyRows (t: Test, server: PgServer): Promise<void> {
  const pgUrl = await server.database(t)
  const dir = tempDir(t)
  const src = join(dir, 'many.db')
  const dst = join(dir, 'back.db')

  // Straight into the tables (each page holds 1000 rows): composite keys, BLOB keys, ids with gaps.
  const db = openDatabase(src)
  db.transaction(() => {
    db.prepare("INSERT INTO users VALUES ('u1', 'alice', 'hash', NULL, 1, 1)").run()
    db.prepare("INSERT INTO clients VALUES ('cli', NULL, 'body', 'password refresh_token', '', '', NULL, NULL, NULL, 1)").run()
    const session = db.prepare("INSERT INTO sessions VALUES (?, 'u1', 'cli', '', 1, 'ua', '192.0.2.1', NULL, ?, ?, ?, ?, NULL, NULL)")
    const token = db.prepare("INSERT INTO refresh_tokens VALUES (?, ?, ?, ?, ?, '192.0.2.1', 'ua', ?, ?, ?, NULL, ?)")
    for (let i = 0; i < 1500; i++) {
      const id = `s${String(i).padStart(5, '0')}`
      session.run(id, i, i + 1, i + 2, i + 3)
      token.run(randomBytes(32), id, 0, null, i, i + 1, '192.0.2.1', 'ua', randomBytes(60))
      token.run(randomBytes(32), id, 1, 0, i + 1, null, null, null, null)
    }
    const event = db.prepare("INSERT INTO security_events (id, at, type, user_id, detail) VALUES (?, ?, 'token_rotated', 'u1', '{\"generation\":1}')")
    for (let i = 0; i < 2500; i++) event.run(3 * i + 7, i)
    const failure = db.prepare('INSERT INTO login_failures VALUES (?, ?, ?, 0, ?)')
    for (let i = 0; i < 2100; i++) failure.run(`name${i % 7}`, i < 7 ? '' : `source${i}`, i % 9 + 1, i)
  }).immediate()
  db.close()

  const store = await openStore(src, { pgPoolSize: 1, pgStatementTimeoutMs: 5000 })
  const sizes: Record<string, number[]> = {}
  for await (const batch of store.exportRows()) (sizes[batch.kind] ??= []).push(batch.rows.length)
  await store.close()
  t.same(sizes.refresh_tokens, [1000, 1000, 1000], 'pages of at most 1000 rows')
  t.same(sizes.security_events, [1000, 1000, 500])
  t.same(Object.keys(sizes), ['users', 'clients', 'sessions', 'refresh_tokens', 'security_events', 'login_failures'], 'empty tables yield nothing')

  const source = await dump(src)
  await copy(t, src, pgUrl, undefined)
  t.same(await dump(pgUrl), source, 'PostgreSQL: every row, once')

  // Budgets exist on PostgreSQL; a SQLite schema without the table drops them (they expire within a window).
  const c = new pg.Client({ connectionString: pgUrl })
  await c.connect()
  await c.query("INSERT INTO budgets SELECT 'failures:192.0.2.' || i, i % 50, 1000000 + i FROM generate_series(1, 1200) AS i")
  await c.end()
  const pgRows = await dump(pgUrl)
  await copy(t, pgUrl, dst, undefined)
  const back = await dump(dst)
  const check = new Database(dst, { readonly: true })
  const hasBudgets = check.prepare("SELECT 1 FROM sqlite_master WHERE name = 'budgets'").get() !== undefined
  check.close()
  t.same(back, { ...pgRows, budgets: hasBudgets ? pgRows.budgets : [] }, 'SQLite again: every row, once')
}
