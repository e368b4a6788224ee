/*
 * The operators' CLI, run as a user runs it: `node bin/tokenline.js ...` on the built dist, against a
 * temporary TOKENLINE_DB. Every bad input must exit non-zero with exactly one line on stderr.
 */
import Database from 'better-sqlite3'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { basicAuth, type TokenBody } from './helpers.js'
import { CHEAP_ARGON2_ENV, mapLimit, postForm, runCli, startServer, tempDir, type Run } from './processes.js'

const PW = 'a decent password'

function setup (t: Test): { db: string, cli: (args: string[], input?: string) => Promise<Run> } {
  const db = join(tempDir(t), 'cli.db')
  return { db, cli: async (args, input) => await runCli(args, { env: { TOKENLINE_DB: db, ...CHEAP_ARGON2_ENV }, ...(input !== undefined && { input }) }) }
}

function assertExit0 (t: Test, r: Run, label: string): void {
  t.equal(r.code, 0, `${label}: exit 0 (${r.stderr.trim()})`)
}

/** A bad input exits non-zero with a one-line message, and nothing else. */
function assertBadInput (t: Test, r: Run, label: string, message?: RegExp): void {
  t.not(r.code, 0, `${label}: non-zero exit`)
  t.ok(r.code !== null && r.code < 128, `${label}: an exit, not a crash or a signal`)
  t.match(r.stderr, /^tokenline: [^\n]+\n$/, `${label}: exactly one line on stderr, starting "tokenline: " (got ${JSON.stringify(r.stderr.slice(0, 300))})`)
  t.notMatch(r.stderr, /\n\s+at /, `${label}: no stack trace`)
  t.equal(r.stdout, '', `${label}: nothing on stdout`)
  if (message !== undefined) t.match(r.stderr, message, `${label}: says what is wrong`)
}

function rows<T> (db: string, sql: string): T[] {
  const conn = new Database(db, { readonly: true })
  try { return conn.prepare(sql).all() as T[] } finally { conn.close() }
}

t.test('users: add, duplicate, list, passwd, disable, enable', async (t) => {
  const { db, cli } = setup(t)
  const add = await cli(['user', 'add', 'Alice'], PW + '\n')
  assertExit0(t, add, 'user add')
  t.match(add.stdout, /^created user alice \(id [\w-]{22}\)\n$/, 'the username is normalised')
  t.notMatch(add.stdout + add.stderr, PW, 'the password is not echoed')
  const [alice] = rows<{ id: string, username: string, password_hash: string }>(db, 'SELECT id, username, password_hash FROM users')
  t.equal(alice?.username, 'alice')
  t.match(alice?.password_hash, /^\$argon2id\$/)

  assertBadInput(t, await cli(['user', 'add', 'alice'], PW + '\n'), 'duplicate', /already exists/)
  assertBadInput(t, await cli(['user', 'add', 'ALICE '], PW + '\n'), 'duplicate after normalisation', /already exists/)
  assertExit0(t, await cli(['user', 'add', 'bob'], 'windows line end\r\n'), 'a CRLF-terminated password')

  const list = await cli(['user', 'list'])
  assertExit0(t, list, 'user list')
  t.match(list.stdout, /^USERNAME\s+ID\s+STATUS\s+CREATED\n/)
  t.match(list.stdout, new RegExp(`\\nalice\\s+${alice?.id}\\s+active\\s+\\d{4}-`))
  t.match(list.stdout, /\nbob\s+\S+\s+active/)

  const hash0 = alice?.password_hash
  const passwd = await cli(['user', 'passwd', 'alice'], 'another decent password\n')
  assertExit0(t, passwd, 'user passwd')
  t.match(passwd.stdout, /changed password of alice; revoked 0 sessions/)
  t.not(rows<{ password_hash: string }>(db, "SELECT password_hash FROM users WHERE username = 'alice'")[0]?.password_hash, hash0, 'the hash changed')

  const disable = await cli(['user', 'disable', 'alice'])
  assertExit0(t, disable, 'user disable')
  t.match(disable.stdout, /disabled alice/)
  t.match((await cli(['user', 'list'])).stdout, /\nalice\s+\S+\s+disabled/)
  assertExit0(t, await cli(['user', 'enable', 'alice']), 'user enable')
  t.match((await cli(['user', 'list'])).stdout, /\nalice\s+\S+\s+active/)

  const events = rows<{ type: string }>(db, 'SELECT type FROM security_events ORDER BY id').map((e) => e.type)
  for (const e of ['user_created', 'password_changed', 'user_disabled', 'user_enabled']) t.ok(events.includes(e), `event ${e} recorded`)
})

t.test('clients: public and confidential, options validated, the secret shown once and stored as a digest', async (t) => {
  const { db, cli } = setup(t)
  const pub = await cli(['client', 'add', 'mobile', '--delivery', 'body', '--scopes', 'read write'])
  assertExit0(t, pub, 'public client')
  t.match(pub.stdout, /^created public client mobile \(delivery body\)\n$/)
  t.notMatch(pub.stdout, /secret/)

  const conf = await cli(['client', 'add', 'svc', '--confidential', '--grants', 'refresh_token,password'])
  assertExit0(t, conf, 'confidential client')
  const secret = /client_secret: (\S+)/.exec(conf.stdout)?.[1]
  t.ok(secret !== undefined && secret.length >= 43, 'a secret of at least 256 bits is printed')
  t.match(conf.stdout, /shown once/)

  const spa = await cli(['client', 'add', 'spa', '--delivery', 'cookie', '--origin', 'https://app.example.com', '--origin', 'http://localhost:5173'])
  assertExit0(t, spa, 'cookie client with origins')
  t.equal(spa.stderr, '', 'no warning when origins are given')
  const noOrigin = await cli(['client', 'add', 'spa2', '--delivery', 'both'])
  assertExit0(t, noOrigin, 'cookie delivery without an origin still works')
  t.match(noOrigin.stderr, /^note: /, 'but warns that browsers cannot use it')

  type Row = { id: string, secret_digest: Buffer | null, delivery: string, grants: string, scopes: string, origins: string }
  const byId = new Map(rows<Row>(db, 'SELECT * FROM clients').map((r) => [r.id, r]))
  t.has(byId.get('mobile'), { id: 'mobile', secret_digest: null, delivery: 'body', grants: 'password refresh_token', scopes: 'read write', origins: '' })
  t.same(byId.get('svc')?.grants, 'refresh_token password')
  t.equal(byId.get('spa')?.delivery, 'cookie')
  t.equal(byId.get('spa')?.origins, 'https://app.example.com http://localhost:5173')
  t.equal(byId.get('spa2')?.delivery, 'both')

  // Only the SHA-256 digest is kept: not in the database file, its WAL, or any listing.
  t.same(byId.get('svc')?.secret_digest, createHash('sha256').update(secret ?? '').digest())
  for (const f of [db, db + '-wal'].filter((f) => existsSync(f))) t.equal(readFileSync(f).indexOf(secret ?? '-'), -1, `secret not in ${f.endsWith('-wal') ? 'the WAL' : 'the database'}`)
  const list = await cli(['client', 'list'])
  assertExit0(t, list, 'client list')
  t.match(list.stdout, /\nsvc\s+confidential\s+body/)
  t.match(list.stdout, /\nspa\s+public\s+cookie\s+\S+\s+-\s+https:\/\/app\.example\.com http:\/\/localhost:5173/)
  t.notOk(list.stdout.includes(secret ?? '-'), 'client list does not show the secret')

  assertBadInput(t, await cli(['client', 'add', 'svc']), 'duplicate client', /already exists/)
})

t.test('every bad input: non-zero exit and one line on stderr', async (t) => {
  const { db, cli } = setup(t)
  assertExit0(t, await cli(['user', 'add', 'alice'], PW + '\n'), 'seed user')
  assertExit0(t, await cli(['client', 'add', 'cli']), 'seed client')
  const before = readFileSync(db)

  const cases: Array<[string[], string | undefined, RegExp?]> = [
    [['frobnicate'], undefined, /unknown command "frobnicate"/],
    [['user'], undefined, /usage/],
    [['user', 'add'], PW + '\n', /missing <username>/],
    [['user', 'add', 'a b'], PW + '\n', /username/],
    [['user', 'add', 'x'.repeat(300)], PW + '\n', /username/],
    [['user', 'add', 'bob', 'extra'], PW + '\n', /unexpected argument/],
    [['user', 'add', 'bob'], '', /no password on standard input/],
    [['user', 'add', 'bob'], 'short\n', /at least 8/],
    [['user', 'add', 'bob'], 'p'.repeat(1025) + '\n', /at most 1024/],
    [['user', 'passwd', 'nobody'], PW + '\n', /no user nobody/],
    [['user', 'passwd', 'alice'], 'short\n', /at least 8/],
    [['user', 'disable', 'nobody'], undefined, /no user nobody/],
    [['client'], undefined, /usage/],
    [['client', 'add'], undefined, /missing <client_id>/],
    [['client', 'add', 'bad id!'], undefined, /client_id/],
    [['client', 'add', 'c1', 'c2'], undefined, /unexpected argument/],
    [['client', 'add', 'c1', '--delivery', 'pigeon'], undefined, /--delivery/],
    [['client', 'add', 'c1', '--delivery'], undefined, /delivery/],
    [['client', 'add', 'c1', '--origin', 'not a url'], undefined, /--origin/],
    [['client', 'add', 'c1', '--origin', 'https://app.example.com/'], undefined, /--origin/],
    [['client', 'add', 'c1', '--origin', '*'], undefined, /--origin/],
    [['client', 'add', 'c1', '--grants', 'implicit'], undefined, /--grants/],
    [['client', 'add', 'c1', '--grants', 'password,client_credentials'], undefined, /--grants/],
    [['client', 'add', 'c1', '--scopes', 'a"b'], undefined, /--scopes/],
    [['client', 'add', 'c1', '--frob'], undefined, /frob/],
    [['client', 'add', 'cli'], undefined, /already exists/],
    [['serve', 'now'], undefined, /no arguments/]
  ]
  // Several at a time: each is a separate process that only reads the database.
  const results = await mapLimit(cases, 4, async ([args, input]) => await cli(args, input))
  cases.forEach(([args, , message], i) => assertBadInput(t, results[i] as Run, args.join(' ').slice(0, 60), message))
  t.same(readFileSync(db), before, 'no refused command wrote to the database')
  t.same(rows<{ id: string }>(db, 'SELECT id FROM clients').map((r) => r.id), ['cli'])

  // Bad settings and bad database paths are bad input too.
  const env = async (extra: Record<string, string>, args = ['user', 'list']): Promise<Run> => await runCli(args, { env: { TOKENLINE_DB: db, ...CHEAP_ARGON2_ENV, ...extra } })
  assertBadInput(t, await env({ TOKENLINE_ARGON2_MEMORY: 'lots' }), 'bad TOKENLINE_ARGON2_MEMORY', /TOKENLINE_ARGON2_MEMORY/)
  assertBadInput(t, await env({ TOKENLINE_ACCESS_TTL: '-5' }), 'bad TOKENLINE_ACCESS_TTL', /TOKENLINE_ACCESS_TTL/)
  const file = join(tempDir(t, { 'plain.txt': 'not a database, not a directory' }), 'plain.txt')
  assertBadInput(t, await env({ TOKENLINE_DB: join(file, 'x.db') }), 'a TOKENLINE_DB under a regular file')
  const garbage = join(tempDir(t), 'garbage.db')
  writeFileSync(garbage, 'this is not an SQLite database at all, just text, long enough to have a header')
  assertBadInput(t, await env({ TOKENLINE_DB: garbage }), 'a TOKENLINE_DB that is not a database')
  assertBadInput(t, await env({ TOKENLINE_DB: tempDir(t) }), 'a TOKENLINE_DB that is a directory')

  // help is not an error; no command at all prints the usage and fails.
  const help = await cli(['help'])
  assertExit0(t, help, 'help')
  t.match(help.stdout, /user add <username>/)
  const none = await cli([])
  t.not(none.code, 0, 'no command: non-zero exit')
  t.match(none.stderr, /usage: tokenline/)
})

t.test('a user and client created by the CLI work against the real server', async (t) => {
  const { db, cli } = setup(t)
  assertExit0(t, await cli(['user', 'add', 'alice'], PW + '\n'), 'user add')
  assertExit0(t, await cli(['client', 'add', 'mobile', '--delivery', 'body']), 'public client')
  const conf = await cli(['client', 'add', 'svc', '--confidential'])
  const secret = /client_secret: (\S+)/.exec(conf.stdout)?.[1] ?? ''

  const server = await startServer(t, { TOKENLINE_DB: db, ...CHEAP_ARGON2_ENV })
  const token = async (params: Record<string, string>, headers: Record<string, string> = {}): Promise<{ status: number, body: TokenBody }> =>
    await postForm(`${server.url}/token`, params, headers)
  const login = { grant_type: 'password', username: 'alice', password: PW }
  const a = await token({ ...login, client_id: 'mobile' })
  t.equal(a.status, 200, 'the CLI user logs in through the public client')
  t.equal(a.body.token_type, 'Bearer')
  t.type(a.body.refresh_token, 'string')
  const b = await token(login, { authorization: basicAuth('svc', secret) })
  t.equal(b.status, 200, 'the printed secret authenticates the confidential client')
  t.equal((await token({ ...login, client_id: 'svc', client_secret: secret + 'x' })).body.error, 'invalid_client')

  // passwd ends the user's sessions, and the server sees it at once.
  const passwd = await cli(['user', 'passwd', 'alice'], 'a new decent password\n')
  assertExit0(t, passwd, 'user passwd while the server runs')
  t.match(passwd.stdout, /revoked 2 sessions/)
  const r = await token({ grant_type: 'refresh_token', client_id: 'mobile', refresh_token: a.body.refresh_token ?? '' })
  t.equal(r.status, 400)
  t.equal(r.body.error, 'invalid_grant')
  t.equal((await token({ ...login, client_id: 'mobile' })).body.error, 'invalid_grant', 'the old password no longer works')
  t.equal((await token({ ...login, password: 'a new decent password', client_id: 'mobile' })).status, 200, 'the new one does')

  assertExit0(t, await cli(['user', 'disable', 'alice']), 'user disable')
  const disabled = await token({ ...login, password: 'a new decent password', client_id: 'mobile' })
  t.same(disabled.body, { error: 'invalid_grant', error_description: 'invalid username or password', reason: 'invalid_credentials' }, 'a disabled user looks like a wrong password')
  assertExit0(t, await cli(['user', 'enable', 'alice']), 'user enable')
  t.equal((await token({ ...login, password: 'a new decent password', client_id: 'mobile' })).status, 200, 'enabled again')
})

t.test('ids never begin with a dash, so `--session <id>` always reads as a value', async (t) => {
  const { randomId } = await import('../server/tokens/refresh-format.js')
  // One in 64 base64url ids would begin with '-': 10,000 draws miss that with odds of about e^-156.
  const ids = Array.from({ length: 10_000 }, randomId)
  t.notOk(ids.some((id) => id.startsWith('-')), 'no leading dash')
  t.ok(ids.every((id) => /^[\w-]{22}$/.test(id)), '22 base64url characters each')
})
