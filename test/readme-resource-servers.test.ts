/*
 * The README's "Protecting your routes" and "APIs that are not on Fastify": every code block of them run
 * as written against a real listening server. A block is written to a .mjs file in the test's directory
 * (inside the project, so `fastify` and `jose` resolve from its node_modules) with only what a reader
 * changes for their own setup replaced, each replacement asserted to hit exactly once: the package name
 * (`tokenline` → the built dist/ entry), the issuer URL (→ the test server's), the port.
 */
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import t, { type Test } from 'tap'
import { build, PASSWORD } from './helpers.js'
import { CHEAP_ARGON2_ENV, cleanEnv, createDatabase, freePort, ROOT, runCli } from './processes.js'
import { README, runBash } from './readme-recipes.js'

const DIST_ENTRY = pathToFileURL(join(ROOT, 'dist', 'server', 'index.js')).href
const EXAMPLE_ISSUER = 'https://auth.example.com'

/** The code between `<!-- name:start -->` and `<!-- name:end -->`, without its fence. */
function block (name: string, lang: string): string {
  const m = new RegExp(`<!-- ${name}:start -->\\n\`\`\`${lang}\\n([\\s\\S]*?)\`\`\`\\n<!-- ${name}:end -->`).exec(README)
  if (m?.[1] === undefined) throw new Error(`README has no ${name} block`)
  return m[1]
}

/** `code` with `from` replaced by `to`, which must occur exactly `times` times. */
function replace (code: string, from: string, to: string, times = 1): string {
  const n = code.split(from).length - 1
  if (n !== times) throw new Error(`expected ${times} × ${JSON.stringify(from)} in the README block, found ${n}`)
  return code.split(from).join(to)
}

/** Writes `code` to `<t's directory>/modules/<file>` (beside the test's database, which t.testdir() would wipe) and returns its path. */
function moduleFile (t: Test, file: string, code: string): string {
  const dir = join(t.testdirName, 'modules')
  mkdirSync(dir, { recursive: true })
  const path = join(dir, file)
  writeFileSync(path, code)
  return path
}

async function form (url: string, params: Record<string, string>, headers: Record<string, string> = {}): Promise<Response> {
  return await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(params) })
}

const login = async (base: string, client: string, scope?: string): Promise<{ access_token: string, refresh_token?: string }> => {
  const res = await form(`${base}/token`, { grant_type: 'password', client_id: client, username: 'alice', password: PASSWORD, ...(scope !== undefined && { scope }) })
  if (res.status !== 200) throw new Error(`login: ${res.status} ${await res.text()}`)
  return await res.json() as { access_token: string, refresh_token?: string }
}

t.test('Protecting your routes: the example app, run as a process, protects /me', async (t) => {
  const dir = t.testdir({})
  mkdirSync(join(dir, 'data'))
  const env = { TOKENLINE_DB: await createDatabase(join(dir, 'data', 'tokenline.db')), ...CHEAP_ARGON2_ENV }
  t.equal((await runCli(['user', 'add', 'alice'], { env, input: `${PASSWORD}\n` })).code, 0)
  t.equal((await runCli(['client', 'add', 'cli', '--delivery', 'body', '--scopes', 'read write'], { env })).code, 0)

  const port = await freePort()
  let code = block('protect-routes', 'js')
  code = replace(code, "from 'tokenline'", `from '${DIST_ENTRY}'`)
  code = replace(code, 'port: 3000', `port: ${port}, host: '127.0.0.1'`)
  const file = join(dir, 'server.mjs')
  writeFileSync(file, code)
  const child = spawn(process.execPath, [file], { cwd: dir, env: cleanEnv({}), stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()))
  t.teardown(async () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM'); await exited })

  const base = `http://127.0.0.1:${port}`
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`the example exited:\n${out}`)
    if (await fetch(`${base}/.well-known/jwks.json`).then((r) => r.ok, () => false)) break
    if (i > 200) throw new Error(`the example did not start:\n${out}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }

  const body = await login(base, 'cli')
  const bearer = { authorization: `Bearer ${body.access_token}` }
  const me = await fetch(`${base}/me`, { headers: bearer })
  t.equal(me.status, 200)
  const alice = JSON.parse(Buffer.from(body.access_token.split('.')[1] as string, 'base64url').toString()).sub as string
  t.same(await me.json(), { user: alice, scopes: ['read', 'write'] }, 'request.tokenline.sub and .scope')

  const none = await fetch(`${base}/me`)
  t.equal(none.status, 401)
  t.equal(none.headers.get('www-authenticate'), 'Bearer realm="tokenline"')
  t.equal((await none.json()).error, 'invalid_token')

  const writeOnly = await login(base, 'cli', 'write')
  const forbidden = await fetch(`${base}/me`, { headers: { authorization: `Bearer ${writeOnly.access_token}` } })
  t.equal(forbidden.status, 403)
  t.equal(forbidden.headers.get('www-authenticate'), 'Bearer error="insufficient_scope", scope="read"')

  t.equal((await form(`${base}/token/revoke`, { client_id: 'cli', token: body.access_token })).status, 200, 'logout')
  const after = await fetch(`${base}/me`, { headers: bearer })
  t.equal(after.status, 401, 'the session check (the default) refuses the token at once')
  t.equal(after.headers.get('www-authenticate'), 'Bearer error="invalid_token"')
})

t.test('APIs that are not on Fastify: the jose snippet and introspection against a listening server', async (t) => {
  const port = await freePort()
  const issuer = `http://127.0.0.1:${port}`
  // The real clock: jose checks exp against it.
  const h = await build(t, { issuer, now: Date.now })
  await h.app.listen({ port, host: '127.0.0.1' })

  const jose = moduleFile(t, 'verify.mjs', replace(block('jose-verify', 'js'), `'${EXAMPLE_ISSUER}'`, `'${issuer}'`))
  const { verifyAccessToken } = await import(pathToFileURL(jose).href) as { verifyAccessToken: (authorization: string | undefined) => Promise<Record<string, unknown>> }

  const cli = await login(issuer, 'cli')
  const alice = (await h.app.tokenline.store.findUserByUsername('alice'))?.id
  const payload = await verifyAccessToken(`Bearer ${cli.access_token}`)
  t.match(payload, { sub: alice, client_id: 'cli', scope: 'read write', iss: issuer, aud: issuer })
  await t.rejects(verifyAccessToken(undefined), 'no header')
  await t.rejects(verifyAccessToken(`Bearer ${cli.access_token.slice(0, -4)}AAAA`), 'a forged signature')
  await t.rejects(verifyAccessToken(`Basic ${cli.access_token}`), 'another scheme')

  // The resource server's own confidential client, made with the README's command.
  const made = await runBash(block('api-client', 'sh'), { env: { TOKENLINE_DB: h.database } })
  t.equal(made.code, 0, made.stderr)
  const secret = /client_secret: (\S+)/.exec(made.stdout)?.[1]
  if (secret === undefined) throw new Error(`no secret in: ${made.stdout}`)
  const previous = process.env.API_CLIENT_SECRET
  process.env.API_CLIENT_SECRET = secret
  t.teardown(() => { if (previous === undefined) delete process.env.API_CLIENT_SECRET; else process.env.API_CLIENT_SECRET = previous })

  const introspection = moduleFile(t, 'introspect.mjs', replace(block('introspect-fetch', 'js'), `'${EXAMPLE_ISSUER}'`, `'${issuer}'`))
  const { introspect } = await import(pathToFileURL(introspection).href) as { introspect: (token: string) => Promise<Record<string, unknown>> }

  // The web app's token (the cookie client `web`, from its own origin), handed to the API.
  const res = await form(`${issuer}/token`, { grant_type: 'password', client_id: 'web', username: 'alice', password: PASSWORD }, { origin: 'http://localhost:3000', 'sec-fetch-site': 'same-origin' })
  t.equal(res.status, 200)
  const web = await res.json() as { access_token: string }
  t.match(await introspect(web.access_token), { active: true, sub: alice, client_id: 'web', token_type: 'access_token' }, 'api introspects web\'s token')
  t.match(await introspect(cli.access_token), { active: true, sub: alice, client_id: 'cli', scope: 'read write' })

  t.equal((await form(`${issuer}/token/revoke`, { client_id: 'cli', token: cli.access_token })).status, 200, 'cli logs out')
  t.same(await introspect(cli.access_token), { active: false }, 'introspection knows the session ended')
  t.match(await verifyAccessToken(`Bearer ${cli.access_token}`), { sub: alice }, 'the stateless check cannot know: the token verifies until its exp')
  t.same(await introspect('not-a-token'), { active: false }, 'garbage is inactive')
  process.env.API_CLIENT_SECRET = 'wrong'
  await t.rejects(introspect(web.access_token), /introspection failed: 401/, 'a wrong secret is refused')
  process.env.API_CLIENT_SECRET = secret
})
