import Fastify from 'fastify'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import tokenline from '../server/plugin.js'
import { ConfigError, SETTINGS, coerce, fromEnv, optionsTable, resolveOptions, unknownSettings, type Setting } from '../server/options.js'
import { MAIN, ROOT, cleanEnv, createDatabase, runCli } from './processes.js'
import { spawn } from 'node:child_process'

/*
 * Every row of SETTINGS is exercised: values it must accept and values it must refuse, through the
 * environment (standalone server, CLI) and through plugin options. Cases are derived from each row's
 * kind, so a setting added later is covered without touching this file.
 */

interface Cases { good: Array<{ env: string, option: unknown, expect: unknown }>, bad: Array<{ env?: string, option?: unknown }> }

function cases (s: Setting): Cases {
  const k = s.kind
  switch (k.type) {
    case 'int': {
      const mid = Math.floor((k.min + k.max) / 2)
      return {
        good: [k.min, mid, k.max].map((n) => ({ env: String(n), option: n, expect: n })),
        bad: [
          { env: String(k.max + 1), option: k.max + 1 },
          { env: k.min > 0 ? String(k.min - 1) : '-1', option: k.min - 1 },
          { env: '1.5', option: 1.5 },
          { env: 'abc', option: 'abc' },
          { env: '', option: String(mid) }, // an option must be a number, not its text
          { env: '1e3', option: Number.NaN }
        ]
      }
    }
    case 'string': {
      const valid = 'x'.repeat(Math.max(k.minLength ?? 1, 12))
      const bad: Cases['bad'] = [{ option: 42 }, { env: 'y'.repeat((k.maxLength ?? 4096) + 1), option: 'y'.repeat((k.maxLength ?? 4096) + 1) }]
      if (s.default !== '') bad.push({ env: '', option: '' })
      if (k.minLength !== undefined) bad.push({ env: 'short', option: 'short' })
      return { good: [{ env: valid, option: valid, expect: valid }], bad }
    }
    case 'url':
      return {
        good: ['https://auth.example.com', 'http://localhost:3000', 'https://example.com/auth'].map((u) => ({ env: u, option: u, expect: u })),
        bad: ['ftp://example.com', 'https://example.com/', 'https://example.com?x=1', 'https://example.com#top', 'https://user:pw@example.com', 'not a url', '']
          .map((u): Cases['bad'][number] => ({ env: u, option: u })).concat([{ option: 3000 }])
      }
    case 'enum':
      return {
        good: k.values.map((v) => ({ env: v, option: v, expect: v })),
        bad: [{ env: 'nope', option: 'nope' }, { env: (k.values[0] ?? '').toUpperCase() + 'X', option: 1 }, { env: '', option: '' }]
      }
    case 'host':
      return {
        good: ['127.0.0.1', '0.0.0.0', '::', '::1', 'localhost', 'tokenline.internal'].map((h) => ({ env: h, option: h, expect: h })),
        bad: [{ env: 'http://0.0.0.0' }, { env: '0.0.0.0:3000' }, { env: '' }, { env: 'two words' }, { env: '-bad-.example' }, { env: 'x'.repeat(254) }]
      }
    case 'trustProxy':
      return {
        good: [
          { env: 'off', option: false, expect: false },
          { env: '2', option: 2, expect: 2 },
          { env: '10.0.0.1', option: '10.0.0.1', expect: '10.0.0.1' },
          { env: '10.0.0.0/8, ::1, loopback', option: '10.0.0.0/8,::1,loopback', expect: '10.0.0.0/8,::1,loopback' }
        ],
        bad: [{ env: '10.0.0.0/33' }, { env: '1.2.3.4.5' }, { env: 'proxy.example.com' }, { env: '::1/129' }, { env: '-1' }, { env: '10.0.0.1/8/8' }]
      }
  }
}

/** Sets `value` at a dotted key (argon2.memoryCost) in a fresh options object. */
function optionsWith (key: string, value: unknown): Record<string, unknown> {
  const [head, tail] = key.split('.') as [string, string | undefined]
  return tail === undefined ? { [head]: value } : { [head]: { [tail]: value } }
}

function readBack (obj: Record<string, unknown>, key: string): unknown {
  return key.split('.').reduce<unknown>((o, p) => (o as Record<string, unknown> | undefined)?.[p], obj)
}

for (const s of SETTINGS) {
  t.test(`${s.env} / ${s.key}`, async (t) => {
    const { good, bad } = cases(s)
    for (const g of good) {
      const { options, server } = fromEnv({ [s.env]: g.env })
      const got = s.scope === 'server' ? (server as unknown as Record<string, unknown>)[s.key] : readBack(options as Record<string, unknown>, s.key)
      t.same(got, g.expect, `env ${s.env}=${JSON.stringify(g.env)} accepted`)
      if (s.scope === 'plugin') {
        // idleTtl is clamped to sessionTtl (tested below): give it room.
        const room = s.key === 'idleTtl' ? { sessionTtl: g.expect } : {}
        const resolved = resolveOptions({ ...room, ...optionsWith(s.key, g.option) } as never) as unknown as Record<string, unknown>
        t.same(readBack(resolved, s.key), g.expect, `option ${s.key}=${JSON.stringify(g.option)} accepted`)
      }
    }
    for (const b of bad) {
      if (b.env !== undefined) {
        t.throws(() => fromEnv({ [s.env]: b.env }), { name: 'ConfigError', message: new RegExp(`^${s.env} \\(${s.key.replace('.', '\\.')}\\) must be `) }, `env ${s.env}=${JSON.stringify(b.env).slice(0, 40)} refused`)
      }
      if (b.option !== undefined && s.scope === 'plugin') {
        t.throws(() => resolveOptions(optionsWith(s.key, b.option) as never), { name: 'ConfigError', message: new RegExp(`^option ${s.key.replace('.', '\\.')} \\(${s.env}\\) must be `) }, `option ${s.key}=${String(b.option).slice(0, 40)} refused`)
      }
    }
    if (s.scope === 'server') {
      t.throws(() => resolveOptions(optionsWith(s.key, s.default) as never), { name: 'ConfigError', message: /unknown tokenline option/ }, 'not a plugin option')
    }
    t.match(s.doc, /\S/, 'documented')
  })
}

t.test('defaults: nothing set means every documented default', async (t) => {
  const { options, server } = fromEnv({})
  t.same(options, {}, 'no plugin option is set from an empty environment')
  t.same(server, { port: 3000, host: '127.0.0.1', trustProxy: false, logLevel: 'info' })
  const o = resolveOptions({})
  t.equal(o.database, './data/tokenline.db')
  t.equal(o.issuer, 'http://localhost:3000')
  t.equal(o.audience, 'http://localhost:3000', 'audience defaults to the issuer')
  t.equal(o.accessTokenTtl, 900)
  t.equal(o.idleTtl, 604800)
  t.equal(o.sessionTtl, 2592000)
  t.equal(o.reuseGrace, 10)
  t.equal(o.metricsToken, '')
  t.equal(resolveOptions({ idleTtl: 90000, sessionTtl: 3600 }).idleTtl, 3600, 'an idle timeout longer than the session is clamped to it')
  t.equal(resolveOptions({ binding: 'strict' }).bindingIp, 'reject', 'strict preset rejects other IP prefixes')
  t.equal(resolveOptions({ binding: 'strict', bindingIp: 'log' }).bindingIp, 'log', 'an explicit bindingIp wins over the preset')
})

t.test('unknown and malformed plugin options are refused by name', async (t) => {
  t.throws(() => resolveOptions({ accesTokenTtl: 60 } as never), { name: 'ConfigError', message: 'unknown tokenline option "accesTokenTtl"' })
  t.throws(() => resolveOptions({ argon2: 'cheap' } as never), { name: 'ConfigError', message: /^option argon2 must be an object with memoryCost, timeCost, parallelism/ })
  t.throws(() => resolveOptions({ argon2: { memory: 1024 } } as never), { name: 'ConfigError', message: /unknown tokenline option "argon2.memory"/ })
  t.throws(() => resolveOptions({ now: 5 } as never), { name: 'ConfigError', message: /option now/ })
  t.throws(() => resolveOptions(null as never), ConfigError)
})

t.test('a secret setting is never echoed in its error', async (t) => {
  const secret = 'hunter2-short'
  const err = t.throws(() => fromEnv({ TOKENLINE_METRICS_TOKEN: secret })) as Error
  t.match(err.message, /TOKENLINE_METRICS_TOKEN/)
  t.notMatch(err.message, secret)
})

t.test('the plugin refuses a bad option at register time', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await t.rejects(async () => { await app.register(tokenline, { database: join(t.testdir({}), 'x.db'), accessTokenTtl: 0 }).ready() }, { name: 'ConfigError', message: /option accessTokenTtl \(TOKENLINE_ACCESS_TTL\) must be an integer from 1 to 86400/ })
})

/** Runs `node dist/server/standalone/main.js` to exit with `env`; a bad setting must stop it before it listens. */
async function startMain (env: Record<string, string>): Promise<{ code: number | null, stderr: string, stdout: string }> {
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN], { env: cleanEnv({ PORT: '0', ...env }), cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    // If it wrongly starts, it would listen forever: stop it as soon as it says so.
    child.stdout.on('data', () => { if (stdout.includes('Server listening')) child.kill('SIGTERM') })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

t.test('npm start refuses a bad environment with exit 2 and one line naming the variable', async (t) => {
  const dir = t.testdir({})
  for (const [name, value] of [['TOKENLINE_ACCESS_TTL', 'abc'], ['PORT', '70000'], ['TOKENLINE_ISSUER', 'https://auth.example.com/'], ['TOKENLINE_TRUST_PROXY', 'everyone']] as const) {
    const r = await startMain({ TOKENLINE_DB: join(dir, 'db.sqlite'), [name]: value })
    t.equal(r.code, 2, `${name}=${value}: exit status 2`)
    const lines = r.stderr.split('\n').filter((l) => l !== '')
    t.equal(lines.length, 1, `${name}: one line on stderr`)
    t.match(lines[0], new RegExp(`^tokenline: ${name} \\(\\w+\\) must be `), `${name}: the line names it and what it accepts`)
    t.notMatch(r.stdout, /Server listening/, `${name}: never listened`)
  }
})

t.test('tokenline serve refuses a bad environment the same way', async (t) => {
  const r = await runCli(['serve'], { env: { TOKENLINE_DB: join(t.testdir({}), 'db.sqlite'), TOKENLINE_BINDING_IP: 'sometimes', PORT: '0' } })
  t.equal(r.code, 2)
  t.match(r.stderr, /^tokenline: TOKENLINE_BINDING_IP \(bindingIp\) must be one of ignore, log, reject, revoke, got "sometimes"\n$/)
})

t.test('the README options table is generated from SETTINGS and up to date', async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const m = /<!-- options:start -->\n([\s\S]*?)<!-- options:end -->/.exec(readme)
  t.ok(m, 'README has the options block')
  t.equal(m?.[1], optionsTable(), 'README table matches SETTINGS: run `npm run build && node scripts/options-table.js`')
  for (const s of SETTINGS) t.match(m?.[1] ?? '', `\`${s.env}\``, `${s.env} is in the README`)
})

/** The README's generated options block, between its markers. */
function readmeTable (): string {
  const m = /<!-- options:start -->\n([\s\S]*?)<!-- options:end -->/.exec(readFileSync(join(ROOT, 'README.md'), 'utf8'))
  return m?.[1] ?? ''
}

t.test('adding a setting is one edit: each row reaches the resolved options, the environment and the README', async (t) => {
  const resolved = resolveOptions({}) as unknown as Record<string, unknown>
  const server = fromEnv({}).server as unknown as Record<string, unknown>
  const readme = readmeTable()
  for (const s of SETTINGS) {
    if (s.scope === 'plugin') t.not(readBack(resolved, s.key), undefined, `${s.key} is a resolved option`)
    else t.not(server[s.key], undefined, `${s.key} is a server setting`)
    // The default, written as a user would write the variable, is read back into the same place.
    const fromVariable = fromEnv({ [s.env]: String(s.default) })
    const read = s.scope === 'plugin' ? readBack(fromVariable.options as Record<string, unknown>, s.key) : (fromVariable.server as unknown as Record<string, unknown>)[s.key]
    t.same(read, coerce(s, s.default, 'option'), `${s.env}=${String(s.default)} is read as its default`)
    const option = s.scope === 'plugin' ? `\`${s.key}\`` : '(server only)'
    t.ok(readme.split('\n').some((row) => row.startsWith(`| \`${s.env}\` | ${option} | `)), `${s.env} has its README row`)
  }
  // Nothing is resolved that the table does not declare, except what only code passes.
  const declared = new Set([...SETTINGS.filter((s) => s.scope === 'plugin').map((s) => s.key.split('.')[0]), 'now', 'logEvents'])
  t.same(Object.keys(resolved).sort(), [...declared].sort(), 'the resolved options are the plugin rows (argon2 as one object), now and logEvents')
  t.same(Object.keys(server).sort(), SETTINGS.filter((s) => s.scope === 'server').map((s) => s.key).sort(), 'the server settings are the server rows')
  t.equal(new Set(SETTINGS.map((s) => s.env)).size, SETTINGS.length, 'no two rows share a variable')
  t.equal(new Set(SETTINGS.map((s) => s.key)).size, SETTINGS.length, 'no two rows share a key')
})

t.test('the doc comment an editor shows for each option gives its default', async (t) => {
  // TokenlineOptions takes each field's doc comment from its row of the table in server/options.ts.
  const source = readFileSync(join(ROOT, 'server', 'options.ts'), 'utf8')
  for (const s of SETTINGS) {
    const name = s.key.split('.').at(-1) ?? s.key
    const comment = new RegExp(`/\\*\\* ([^\\n]*) \\*/\\n {2}${name}: \\{`).exec(source)?.[1]
    const shown = typeof s.default === 'number' ? String(s.default) : `'${s.default}'`
    t.match(comment ?? '', new RegExp(`@default ${shown.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}(?: |$)`), `${s.key}: @default ${shown}`)
  }
})

t.test('an unknown TOKENLINE_ variable is named with the closest setting', async (t) => {
  t.same(unknownSettings({
    TOKENLINE_ACCES_TTL: '60',
    TOKENLINE_ISSUR: 'https://auth.example.com',
    TOKENLINE_LOGLEVEL: 'warn',
    TOKENLINE_DB: 'x.db',
    TOKENLINE_TEST_DEFERRED: '1',
    PORT: '3000',
    TOKENLINEX: '1',
    HOME: '/root'
  }), [
    'unknown setting TOKENLINE_ACCES_TTL (did you mean TOKENLINE_ACCESS_TTL?)',
    'unknown setting TOKENLINE_ISSUR (did you mean TOKENLINE_ISSUER?)',
    'unknown setting TOKENLINE_LOGLEVEL (did you mean TOKENLINE_LOG_LEVEL?)'
  ], 'settings, the test harness switch and other variables pass without a word')
  t.same(unknownSettings({}), [], 'nothing to say about an empty environment')
  for (const s of SETTINGS) t.same(unknownSettings({ [s.env]: String(s.default) }), [], `${s.env} is known`)
})

t.test('npm start warns about an unknown TOKENLINE_ variable in its log, and starts', async (t) => {
  const r = await startMain({ TOKENLINE_DB: join(t.testdir({}), 'db.sqlite'), TOKENLINE_ACCES_TTL: '60', TOKENLINE_TEST_DEFERRED: '1' })
  const log = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number, msg: string })
  t.same(log.filter((l) => l.level >= 40).map((l) => [l.level, l.msg]), [[40, 'unknown setting TOKENLINE_ACCES_TTL (did you mean TOKENLINE_ACCESS_TTL?)']], 'one warning, at warn level')
  t.ok(log.some((l) => l.msg.includes('Server listening')), 'it still listened')
  t.equal(r.stderr, '', 'nothing on stderr')
})

t.test('the CLI warns about an unknown TOKENLINE_ variable on stderr, and runs', async (t) => {
  const db = await createDatabase(join(t.testdir({}), 'db.sqlite'))
  const r = await runCli(['keys', 'list'], { env: { TOKENLINE_DB: db, TOKENLINE_BINDNG: 'strict' } })
  t.equal(r.code, 0, 'the command still ran')
  t.equal(r.stderr, 'tokenline: warning: unknown setting TOKENLINE_BINDNG (did you mean TOKENLINE_BINDING?)\n', 'one line naming the closest setting')
  const quiet = await runCli(['keys', 'list'], { env: { TOKENLINE_DB: db } })
  t.equal(quiet.stderr, '', 'no warning without one')
})
