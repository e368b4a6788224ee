/*
 * Every `tokenline` command on PostgreSQL, as an operator runs it (`node bin/tokenline.js` on the built
 * dist, TOKENLINE_DB a postgres:// URL), against sessions a real server on the same database made:
 * the same commands do the same things as on SQLite (test/cli.test.ts, test/audit-cli.test.ts), and a
 * database that cannot be used is one line on stderr that never shows the URL's password.
 */
import t, { type Test } from 'tap'
import { PASSWORD, type TokenBody } from './helpers.js'
import { CHEAP_ARGON2_ENV, freePort, postForm, runCli, startServer, type Run } from './processes.js'
import { sharedPostgres, skipWithoutPostgres } from './postgres.js'

const ok = (t: Test, r: Run, label: string): string => {
  t.equal(r.code, 0, `${label}: exit 0 ${r.stderr.trim()}`)
  return r.stdout
}

const oneLine = (t: Test, r: Run, label: string, message: RegExp): void => {
  t.not(r.code, 0, `${label}: non-zero exit`)
  t.match(r.stderr, /^tokenline: [^\n]+\n$/, `${label}: one line on stderr (${JSON.stringify(r.stderr.slice(0, 300))})`)
  t.match(r.stderr, message, `${label}: says why`)
}

t.test('the CLI on PostgreSQL', async (t) => {
  const server = await sharedPostgres()
  if (server === undefined) return skipWithoutPostgres(t)
  const env = { TOKENLINE_DB: await server.database(t), ...CHEAP_ARGON2_ENV }
  const cli = async (args: string[], input?: string): Promise<Run> => await runCli(args, { env, ...(input !== undefined && { input }) })

  t.match(ok(t, await cli(['user', 'add', 'Alice'], `${PASSWORD}\n`), 'user add'), /^created user alice \(id [\w-]{22}\)\n$/, 'the name normalised')
  oneLine(t, await cli(['user', 'add', 'ALICE'], `${PASSWORD}\n`), 'a duplicate user', /already exists/)
  t.match(ok(t, await cli(['client', 'add', 'cli', '--delivery', 'body']), 'client add'), /cli/)
  const confidential = ok(t, await cli(['client', 'add', 'svc', '--confidential']), 'client add --confidential')
  t.match(confidential, /secret/i, 'the secret is shown once')
  oneLine(t, await cli(['client', 'add', 'cli']), 'a duplicate client', /already exists/)
  t.match(ok(t, await cli(['client', 'list']), 'client list'), /\ncli\s[\s\S]*\nsvc\s/)
  t.match(ok(t, await cli(['user', 'list']), 'user list'), /\nalice\s+\S+\s+active/)

  // No grace: a replay of a consumed token is reuse at once.
  const srv = await startServer(t, { ...env, TOKENLINE_REUSE_GRACE: '0' })
  const token = `${srv.url}/token`
  const login = async (ua: string): Promise<TokenBody> =>
    (await postForm(token, { grant_type: 'password', client_id: 'cli', username: 'alice', password: PASSWORD }, { 'user-agent': ua })).body
  const phone = await login('Phone/1.0')
  const rotated = (await postForm(token, { grant_type: 'refresh_token', client_id: 'cli', refresh_token: phone.refresh_token as string }, { 'user-agent': 'Phone/1.0' })).body
  t.ok(rotated.refresh_token, 'the phone refreshed')
  const replay = await postForm(token, { grant_type: 'refresh_token', client_id: 'cli', refresh_token: phone.refresh_token as string }, { 'user-agent': 'Phone/1.0' })
  t.equal(replay.body.reason, 'reuse_detected', 'the consumed first token, presented again, is reuse')
  await login('Laptop/1.0')

  const sessions = ok(t, await cli(['sessions', 'alice']), 'sessions')
  t.match(sessions, /Laptop\/1\.0/)
  t.match(sessions, /revoked/)
  const sid = /^(\S{22})\s.*Laptop/m.exec(sessions)?.[1] ?? /\b([\w-]{22})\b[^\n]*live/.exec(sessions)?.[1]
  t.ok(sid, 'the laptop session is listed with its id')
  const phoneSid = /\b([\w-]{22})\b[^\n]*reuse/.exec(sessions)?.[1]
  if (phoneSid !== undefined) {
    const lineage = ok(t, await cli(['lineage', phoneSid]), 'lineage')
    t.match(lineage, /reuse/i, 'the lineage shows the reuse')
  }
  t.match(ok(t, await cli(['events', '--user', 'alice']), 'events --user'), /reuse_detected/)
  if (sid !== undefined) t.match(ok(t, await cli(['revoke', '--session', sid]), 'revoke --session'), /revoked/)
  t.match(ok(t, await cli(['revoke', '--user', 'alice']), 'revoke --user'), /revoked/)

  t.match(ok(t, await cli(['user', 'passwd', 'alice'], 'another decent password\n'), 'user passwd'), /changed password of alice/)
  t.match(ok(t, await cli(['user', 'disable', 'alice']), 'user disable'), /disabled alice/)
  ok(t, await cli(['user', 'enable', 'alice']), 'user enable')
  ok(t, await cli(['unlock', 'alice']), 'unlock')

  const keys = ok(t, await cli(['keys', 'list']), 'keys list')
  t.match(ok(t, await cli(['keys', 'rotate']), 'keys rotate'), /new signing key/)
  t.not(ok(t, await cli(['keys', 'list']), 'keys list again'), keys, 'the rotation shows in the listing')
  ok(t, await cli(['prune']), 'prune')
  oneLine(t, await cli(['backup', 'somewhere.db']), 'backup', /pg_dump/)

  await srv.stop()
})

t.test('a PostgreSQL that cannot be used: one line naming the server, never the password', async (t) => {
  const port = await freePort()
  const url = `postgres://tokenline:hunter2-secret@127.0.0.1:${port}/tokenline`
  const r = await runCli(['user', 'list'], { env: { TOKENLINE_DB: url } })
  oneLine(t, r, 'unreachable', new RegExp(`127\\.0\\.0\\.1:${port}/tokenline`))
  t.notMatch(r.stderr + r.stdout, /hunter2/, 'the password is not shown')
})
