import Database from 'better-sqlite3'
import { chmodSync, copyFileSync, existsSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { openDatabase } from '../db/sqlite/database.js'
import { digest } from '../server/tokens/refresh-format.js'
import { lineageViolations } from './invariants.js'
import { addAliceAndCli, CHEAP_ARGON2_ENV, createDatabase, runCli, sendForm, startServer } from './processes.js'

/*
 * `tokenline backup <file>` (SQLite's online backup API) taken while a server process is busy rotating
 * refresh tokens: the copy restores to a database that passes `PRAGMA integrity_check` and the lineage
 * invariants, and holds every refresh token the clients had received before the backup started.
 */

const PASSWORD = 'backup test password'

t.test('a backup taken during a refresh load restores to a sound database', async (t) => {
  const dir = t.testdir({})
  const env = { TOKENLINE_DB: join(dir, 'live.db'), TOKENLINE_THROTTLE_PASSWORD: '0', TOKENLINE_THROTTLE_FAILURES: '0', ...CHEAP_ARGON2_ENV }
  await addAliceAndCli(t, env, PASSWORD)
  const server = await startServer(t, env)

  const received: string[] = []
  let failures = 0
  // Shared with the workers: an object, so the loops below see each other's updates.
  const load = { stop: false, completed: 0 }
  const worker = async (): Promise<void> => {
    let rt: string | undefined
    for (let i = 0; !load.stop; i++) {
      const params: Record<string, string> = rt === undefined || i % 25 === 0
        ? { grant_type: 'password', username: 'alice', password: PASSWORD, client_id: 'cli' }
        : { grant_type: 'refresh_token', refresh_token: rt, client_id: 'cli' }
      const o = await sendForm(`${server.url}/token`, params).outcome
      load.completed++
      if (o.kind === 'response' && o.status === 200) {
        rt = (JSON.parse(o.body) as { refresh_token: string }).refresh_token
        received.push(rt)
      } else {
        failures++
        rt = undefined
      }
    }
  }
  const workers = Array.from({ length: 4 }, async () => await worker())
  while (load.completed < 100) await new Promise((resolve) => setImmediate(resolve))

  const backups: Array<{ file: string, before: string[] }> = []
  for (let i = 0; i < 3; i++) {
    const file = join(dir, `backup-${i}.db`)
    const before = [...received]
    const startedAt = load.completed
    const r = await runCli(['backup', file], { env })
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, new RegExp(`^backup of .*live\\.db written to .*backup-${i}\\.db \\(${statSync(file).size} bytes\\)\\n$`), 'prints where and how big')
    t.ok(load.completed > startedAt, `the server kept rotating during backup ${i} (${load.completed - startedAt} requests)`)
    backups.push({ file, before })
  }
  load.stop = true
  await Promise.all(workers)
  t.equal(failures, 0, 'the load itself never failed')
  server.child.kill('SIGTERM')
  t.same(await server.exited, { code: 0, signal: null })

  for (const [i, b] of backups.entries()) {
    // Restore as an operator would: the server stopped, the backup copied into place.
    const restored = join(dir, `restored-${i}.db`)
    copyFileSync(b.file, restored)
    const db = openDatabase(restored)
    t.equal(db.pragma('integrity_check', { simple: true }), 'ok', `backup ${i}: integrity_check ok`)
    const has = db.prepare<[Buffer], { one: number }>('SELECT 1 AS one FROM refresh_tokens WHERE digest = ?')
    const missing = b.before.filter((rt) => has.get(digest(rt)) === undefined)
    t.same(missing, [], `backup ${i}: every refresh token received before it started is in it (${b.before.length})`)
    db.close()
    t.same(await lineageViolations(restored), [], `backup ${i}: lineage invariants hold`)
  }
})

t.test('tokenline backup refuses to overwrite, and other bad input, with one line', async (t) => {
  const dir = t.testdir({})
  const env = { TOKENLINE_DB: await createDatabase(join(dir, 'live.db')), ...CHEAP_ARGON2_ENV }
  t.equal((await runCli(['user', 'add', 'alice'], { env, input: `${PASSWORD}\n` })).code, 0)
  const target = join(dir, 'copy.db')
  writeFileSync(target, 'precious')

  const refused = await runCli(['backup', target], { env })
  t.equal(refused.code, 1)
  t.match(refused.stderr, /^tokenline: .*copy\.db already exists \(use --force to overwrite it\)\n$/)
  t.equal(statSync(target).size, 'precious'.length, 'the existing file is untouched')

  const forced = await runCli(['backup', target, '--force'], { env })
  t.equal(forced.code, 0, forced.stderr)
  const copy = new Database(target, { readonly: true })
  t.equal((copy.prepare('SELECT count(*) AS n FROM users').get() as { n: number }).n, 1, 'the forced backup replaced it')
  copy.close()

  writeFileSync(`${target}-wal`, 'stale')
  const stale = await runCli(['backup', target, '--force'], { env })
  t.equal(stale.code, 1, 'a -wal beside the target would be replayed into the new copy: refused')
  t.match(stale.stderr, /^tokenline: .*copy\.db-wal exists: .* is open or was not closed cleanly; move it away first\n$/)

  const usage = await runCli(['backup'], { env })
  t.equal(usage.code, 2)
  t.match(usage.stderr, /^tokenline: usage: tokenline backup <file> \[--force\]\n$/)
  const same = await runCli(['backup', join(dir, 'live.db')], { env })
  t.equal(same.code, 1)
  t.match(same.stderr, /^tokenline: the backup file must not be the database itself\n$/)
  const noDb = await runCli(['backup', join(dir, 'x.db')], { env: { ...env, TOKENLINE_DB: join(dir, 'missing.db') } })
  t.equal(noDb.code, 1)
  t.match(noDb.stderr, /^tokenline: database .*missing\.db does not exist/)
  t.notOk(existsSync(join(dir, 'missing.db')), 'a backup never creates the database it was asked to copy')
  const noDir = await runCli(['backup', join(dir, 'nope', 'x.db')], { env })
  t.equal(noDir.code, 1)
  t.match(noDir.stderr, /^tokenline: directory .* does not exist\n$/)
})

t.test('a backup holds the private signing keys: written 0600, whatever the umask', async (t) => {
  const dir = t.testdir({})
  const env = { TOKENLINE_DB: await createDatabase(join(dir, 'live.db')), ...CHEAP_ARGON2_ENV }
  t.equal((await runCli(['user', 'add', 'alice'], { env, input: `${PASSWORD}\n` })).code, 0)
  const before = process.umask()
  t.teardown(() => { process.umask(before) })
  for (const umask of [0o000, 0o022, 0o002]) {
    // The CLI inherits this process's umask.
    process.umask(umask)
    const target = join(dir, `copy-${umask.toString(8)}.db`)
    const r = await runCli(['backup', target], { env })
    t.equal(r.code, 0, r.stderr)
    t.equal(statSync(target).mode & 0o777, 0o600, `mode 0600 under umask ${umask.toString(8).padStart(3, '0')}`)
    // --force replaces a file that was world-readable: the new one is 0600 too.
    writeFileSync(target, 'old')
    chmodSync(target, 0o644)
    t.equal((await runCli(['backup', target, '--force'], { env })).code, 0)
    t.equal(statSync(target).mode & 0o777, 0o600, 'a forced backup over a 0644 file is 0600')
  }
})
