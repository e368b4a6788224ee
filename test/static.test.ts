/*
 * The demo SPA's files as the standalone server serves them: strict headers, and Tokenline's routes and
 * JSON 404s untouched by the static files. (The page itself runs in Chromium in browser.test.ts.)
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildServer, STATIC_HEADERS } from '../server/standalone/app.js'
import { fromEnv } from '../server/options.js'

/** The standalone server as `npm start` builds it, on a fresh database (cheap argon2, no log). */
async function server (t: Test): Promise<FastifyInstance> {
  const { options, server } = fromEnv({
    TOKENLINE_DB: join(t.testdir({}), 'tokenline.db'),
    TOKENLINE_LOG_LEVEL: 'silent',
    TOKENLINE_ARGON2_MEMORY: '1024',
    TOKENLINE_ARGON2_TIME: '1'
  })
  const app = await buildServer(options, server)
  t.teardown(() => app.close())
  return app
}

const PUBLIC = join(import.meta.dirname, '..', 'public')

t.test('the demo page and its files', async (t) => {
  const app = await server(t)

  const page = await app.inject({ method: 'GET', url: '/' })
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  t.match(page.body, /<form id="login-form"/)
  for (const [name, value] of Object.entries(STATIC_HEADERS)) t.equal(page.headers[name], value, `${name} on the page`)
  const csp = String(page.headers['content-security-policy'])
  t.match(csp, /default-src 'self'/)
  t.notMatch(csp, /unsafe-inline|unsafe-eval|\*/, 'no inline script or style, no wildcard source')
  t.match(csp, /frame-ancestors 'none'/, 'cannot be framed (clickjacking the login form)')

  for (const [file, type] of [['/app.js', /javascript/], ['/tokenline-client.js', /javascript/], ['/style.css', /^text\/css/], ['/favicon.svg', /^image\/svg\+xml/]] as const) {
    const res = await app.inject({ method: 'GET', url: file })
    t.equal(res.statusCode, 200, `${file} is served`)
    t.match(res.headers['content-type'], type)
    t.equal(res.headers['x-content-type-options'], 'nosniff')
  }
  t.equal((await app.inject({ method: 'HEAD', url: '/' })).statusCode, 200, 'HEAD /')
})

t.test('Tokenline routes and 404s are unchanged by the static files', async (t) => {
  const app = await server(t)

  const get = await app.inject({ method: 'GET', url: '/token' })
  t.equal(get.statusCode, 405, 'GET /token is still Tokenline\'s 405')
  t.match(get.json(), { error: 'invalid_request' })
  const post = await app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'grant_type=password&client_id=web' })
  t.equal(post.statusCode, 400)
  t.match(post.json(), { error: 'invalid_request' })
  t.equal(post.headers['content-security-policy'], undefined, 'API responses do not carry the page\'s headers')
  t.equal((await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).statusCode, 200)

  for (const url of ['/nope', '/nope.js', '/..%2fpackage.json', '/%2e%2e/package.json', '/public/index.html', '/.gitignore']) {
    const res = await app.inject({ method: 'GET', url })
    t.equal(res.statusCode, 404, `${url} is not found`)
    t.match(res.json(), { error: 'not_found' }, `${url}: JSON 404`)
  }
})

t.test('the page honours its own CSP: no inline script, style or handlers', async (t) => {
  const html = readFileSync(join(PUBLIC, 'index.html'), 'utf8')
  const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)]
  t.ok(scripts.length > 0)
  for (const [, attrs, body] of scripts) {
    t.match(attrs, /\bsrc="\/[\w.-]+\.js"/, 'every script is a same-origin file')
    t.equal(body?.trim(), '', 'with no inline code')
  }
  t.notMatch(html, /<style\b|\sstyle=/i, 'no inline style')
  t.notMatch(html, /\son[a-z]+=/i, 'no inline event handlers')
  // The client keeps the access token in memory: no web storage anywhere in the page's scripts, except
  // the client's session hint, whose one write is the user's sub and name (never a token).
  for (const file of ['app.js', 'tokenline-client.js']) {
    const code = readFileSync(join(PUBLIC, file), 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '')
    t.notMatch(code, /sessionStorage|indexedDB|document\.cookie|innerHTML/, `${file} touches no other storage or innerHTML`)
    const writes = [...code.matchAll(/\.setItem\(([^\n]*)/g)].map((m) => m[1])
    if (file === 'app.js') t.notMatch(code, /localStorage/, 'app.js uses no localStorage')
    else t.same(writes, ['o.sessionHint, JSON.stringify({ sub, username: name }))'], 'the one localStorage write is the session hint: sub and name')
  }
})
