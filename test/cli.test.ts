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
import { CHEAP_ARGON2_ENV, createDatabase, mapLimit, postForm, runCli, startServer, tempDir, type Run } from './processes.js'

const PW = 'a decent password'

async function setup (t: Test): Promise<{ db: string, cli: (args: string[], input?: string) => Promise<Run> }> {
  // Created as the server's first start creates it: the CLI never creates a database.
  const db = await createDatabase(join(tempDir(t), 'cli.db'))
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
  const { db, cli } = await setup(t)
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
  const { db, cli } = await setup(t)
  const pub = await cli(['client', 'add', 'mobile', '--delivery', 'body', '--scopes', 'read write'])
  assertExit0(t, pub, 'public client')
  t.match(pub.stdout, /^created client mobile \(public, delivery body\)\n$/, 'without an origin the delivery is body')
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
  const browser = await cli(['client', 'add', 'spa3', '--origin', 'https://spa3.example.com'])
  assertExit0(t, browser, 'a browser client without --delivery')
  t.equal(browser.stdout, 'created client spa3 (public, delivery cookie)\n', 'with an origin the delivery is cookie, and it says so')
  t.equal(browser.stderr, '')
  const readable = await cli(['client', 'add', 'spa4', '--delivery', 'body', '--origin', 'https://spa4.example.com'])
  assertExit0(t, readable, 'body delivery asked for explicitly with an origin')
  t.match(readable.stdout, /\(public, delivery body\)/)
  t.match(readable.stderr, /^note: delivery body hands browsers a refresh token their JavaScript can read/, 'is allowed, with a note')

  type Row = { id: string, secret_digest: Buffer | null, delivery: string, grants: string, scopes: string, origins: string }
  const byId = new Map(rows<Row>(db, 'SELECT * FROM clients').map((r) => [r.id, r]))
  t.has(byId.get('mobile'), { id: 'mobile', secret_digest: null, delivery: 'body', grants: 'password refresh_token', scopes: 'read write', origins: '' })
  t.same(byId.get('svc')?.grants, 'refresh_token password')
  t.equal(byId.get('spa')?.delivery, 'cookie')
  t.equal(byId.get('spa')?.origins, 'https://app.example.com http://localhost:5173')
  t.equal(byId.get('spa2')?.delivery, 'both')
  t.has(byId.get('spa3'), { delivery: 'cookie', origins: 'https://spa3.example.com', grants: 'password refresh_token', scopes: '' })
  t.equal(byId.get('spa4')?.delivery, 'body')

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

t.test('client update: only the fields given change, validated as by add; each change printed', async (t) => {
  const { db, cli } = await setup(t)
  const conf = await cli(['client', 'add', 'spa', '--confidential', '--origin', 'https://a.example.com', '--scopes', 'read'])
  assertExit0(t, conf, 'client add')
  type Row = { id: string, secret_digest: Buffer | null, delivery: string, grants: string, scopes: string, origins: string, created_at: number }
  const client = (): Row | undefined => rows<Row>(db, "SELECT * FROM clients WHERE id = 'spa'")[0]
  const original = client()

  const delivery = await cli(['client', 'update', 'spa', '--delivery', 'both'])
  assertExit0(t, delivery, 'update --delivery')
  t.equal(delivery.stdout, 'updated client spa\n  delivery  cookie -> both\n')
  t.has(client(), { delivery: 'both', origins: 'https://a.example.com', grants: 'password refresh_token', scopes: 'read' }, 'nothing else changed')

  const origins = await cli(['client', 'update', 'spa', '--origin', 'https://b.example.com', '--origin', 'http://localhost:5173', '--origin', 'https://b.example.com'])
  assertExit0(t, origins, 'update --origin')
  t.equal(origins.stdout, 'updated client spa\n  origins   https://a.example.com -> https://b.example.com http://localhost:5173\n', 'the list is replaced, duplicates dropped')

  const several = await cli(['client', 'update', 'spa', '--grants', 'refresh_token', '--scopes', '', '--delivery', 'cookie'])
  assertExit0(t, several, 'several at once')
  t.equal(several.stdout, 'updated client spa\n  delivery  both -> cookie\n  grants    password refresh_token -> refresh_token\n  scopes    read -> -\n')
  t.equal(several.stderr, '')
  const after = client()
  t.has(after, { delivery: 'cookie', grants: 'refresh_token', scopes: '', origins: 'https://b.example.com http://localhost:5173', created_at: original?.created_at })
  t.same(after?.secret_digest, original?.secret_digest, 'the secret is untouched')

  const same = await cli(['client', 'update', 'spa', '--delivery', 'cookie'])
  assertExit0(t, same, 'a value it already has')
  t.equal(same.stdout, 'client spa unchanged\n')

  const before = readFileSync(db)
  const cases: Array<[string[], RegExp]> = [
    [['client', 'update', 'nobody', '--delivery', 'body'], /^tokenline: no client nobody\n$/],
    [['client', 'update', 'spa'], /nothing to change/],
    [['client', 'update'], /missing <client_id>/],
    [['client', 'update', 'bad id!', '--delivery', 'body'], /client_id/],
    [['client', 'update', 'spa', '--delivery', 'pigeon'], /--delivery/],
    [['client', 'update', 'spa', '--origin', 'https://a.example.com/'], /--origin/],
    [['client', 'update', 'spa', '--grants', 'implicit'], /--grants/],
    [['client', 'update', 'spa', '--scopes', 'a"b'], /--scopes/],
    [['client', 'update', 'spa', '--confidential'], /confidential/]
  ]
  const results = await mapLimit(cases, 4, async ([args]) => await cli(args))
  cases.forEach(([args, message], i) => assertBadInput(t, results[i] as Run, args.join(' '), message))
  t.same(readFileSync(db), before, 'no refused update wrote to the database')

  const events = rows<{ type: string, client_id: string, detail: string }>(db, "SELECT * FROM security_events WHERE type = 'client_updated' ORDER BY id")
  t.same(events.map((e) => JSON.parse(e.detail)), [
    { via: 'cli', delivery: 'both' },
    { via: 'cli', origins: 'https://b.example.com http://localhost:5173' },
    { via: 'cli', delivery: 'cookie', grants: 'refresh_token', scopes: '' },
    { via: 'cli', delivery: 'cookie' }
  ], 'each update is in the audit trail, with what it set')
})

t.test('client remove: the client goes, its sessions stop working at once, the audit trail keeps them', async (t) => {
  const { db, cli } = await setup(t)
  const server = await startServer(t, { TOKENLINE_DB: db, ...CHEAP_ARGON2_ENV })
  assertExit0(t, await cli(['user', 'add', 'alice'], PW + '\n'), 'user add')
  assertExit0(t, await cli(['client', 'add', 'mobile']), 'the client to remove')
  assertExit0(t, await cli(['client', 'add', 'other']), 'another client')
  const token = async (params: Record<string, string>): Promise<{ status: number, body: TokenBody }> => await postForm(`${server.url}/token`, params)
  const login = async (clientId: string): Promise<TokenBody> => (await token({ grant_type: 'password', username: 'alice', password: PW, client_id: clientId })).body
  const [m1, m2, o1] = [await login('mobile'), await login('mobile'), await login('other')]
  t.type(m1.refresh_token, 'string')

  const removed = await cli(['client', 'remove', 'mobile'])
  assertExit0(t, removed, 'client remove')
  t.equal(removed.stdout, 'removed client mobile; revoked 2 sessions\n')
  t.same(rows<{ id: string }>(db, 'SELECT id FROM clients ORDER BY id').map((r) => r.id), ['other', 'web'])

  for (const rt of [m1.refresh_token, m2.refresh_token]) {
    const r = await token({ grant_type: 'refresh_token', client_id: 'mobile', refresh_token: rt ?? '' })
    t.equal(r.body.error, 'invalid_client', 'a refresh token of the removed client is refused at once')
  }
  t.equal((await login('mobile')).error, 'invalid_client', 'and no one logs in through it')
  t.equal((await token({ grant_type: 'refresh_token', client_id: 'other', refresh_token: o1.refresh_token ?? '' })).status, 200, 'another client\'s session goes on')

  const events = await cli(['events', '--user', 'alice'])
  assertExit0(t, events, 'events')
  t.equal(events.stdout.split('\n').filter((l) => /session_revoked/.test(l) && /client_removed/.test(l)).length, 2, 'tokenline events shows both revocations and why')
  const trail = rows<{ type: string, client_id: string, reason: string | null, detail: string | null }>(db, "SELECT * FROM security_events WHERE client_id = 'mobile' ORDER BY id")
  t.same(trail.map((e) => e.type), ['login_succeeded', 'login_succeeded', 'client_removed', 'session_revoked', 'session_revoked'], 'the logins, the removal and its revocations')
  t.ok(trail.filter((e) => e.type !== 'login_succeeded').every((e) => e.detail === '{"via":"cli"}'), 'marked as done from the CLI')

  assertBadInput(t, await cli(['client', 'remove', 'mobile']), 'removed twice', /^tokenline: no client mobile\n$/)
  assertBadInput(t, await cli(['client', 'remove']), 'no client_id', /missing <client_id>/)
  assertBadInput(t, await cli(['client', 'remove', 'other', 'extra']), 'an extra argument', /unexpected argument/)
  const help = await cli(['help'])
  t.match(help.stdout, /^ {2}client update <client_id> /m, 'tokenline help lists client update')
  t.match(help.stdout, /^ {2}client remove <client_id> /m, 'and client remove')
})

t.test('the CLI never creates a database: a missing SQLite TOKENLINE_DB is one line naming it, and nothing is created', async (t) => {
  const dir = tempDir(t)
  const cases: Array<[string[], string | undefined]> = [
    [['user', 'add', 'alice'], PW + '\n'], [['user', 'list'], undefined], [['client', 'add', 'cli'], undefined],
    [['client', 'update', 'cli', '--delivery', 'body'], undefined], [['client', 'remove', 'cli'], undefined], [['client', 'list'], undefined],
    [['sessions', 'alice'], undefined], [['events'], undefined], [['prune'], undefined], [['unlock', 'alice'], undefined], [['keys', 'list'], undefined],
    [['keys', 'rotate'], undefined], [['revoke', '--user', 'alice'], undefined], [['lineage', 'x'], undefined], [['copy', '--to', join(dir, 'target.db')], undefined]
  ]
  const results = await mapLimit(cases, 4, async ([args, input]) => await runCli(args, { env: { TOKENLINE_DB: join(dir, 'sub', 'nope.db'), ...CHEAP_ARGON2_ENV }, ...(input !== undefined && { input }) }))
  const abs = join(dir, 'sub', 'nope.db')
  cases.forEach(([args], i) => assertBadInput(t, results[i] as Run, args.join(' '), new RegExp(`^tokenline: database ${abs.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} does not exist: start the server once \\(npm start\\) to create it, or set TOKENLINE_DB`)))
  t.notOk(existsSync(join(dir, 'sub')), 'no directory created')
  t.notOk(existsSync(join(dir, 'target.db')), 'no copy target created')

  // A relative path is named absolute, resolved where the command ran.
  const relative = await runCli(['user', 'list'], { env: { TOKENLINE_DB: 'data/missing-here.db' }, cwd: dir })
  assertBadInput(t, relative, 'a relative path', new RegExp(`database ${join(dir, 'data', 'missing-here.db').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} does not exist`))
  t.notOk(existsSync(join(dir, 'data')), 'nothing created there either')
})

t.test('every bad input: non-zero exit and one line on stderr', async (t) => {
  const { db, cli } = await setup(t)
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
  const { db, cli } = await setup(t)
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
