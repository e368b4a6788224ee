/*
 * The standalone server as `npm start` runs it, in a real process on a real port: the issuer it derives
 * from PORT, and what it prints when its stdout is not a terminal (JSON lines only, no line per request);
 * the banner a terminal gets instead is a pure function, tested as one.
 */
import { join } from 'node:path'
import type { FastifyReply, FastifyRequest } from 'fastify'
import t, { type Test } from 'tap'
import { decodeJwt } from 'jose'
import { QuietRequestLog } from '../server/standalone/app.js'
import { banner, listenUrl } from '../server/standalone/banner.js'
import { PASSWORD } from './helpers.js'
import { addAliceAndCli, CHEAP_ARGON2_ENV, freePort, postForm, startServer, tempDir } from './processes.js'

t.test('without TOKENLINE_ISSUER the issuer follows PORT', async (t) => {
  const dir = tempDir(t)
  const port = await freePort()
  const env = { TOKENLINE_DB: join(dir, 'tokenline.db'), ...CHEAP_ARGON2_ENV }
  await addAliceAndCli(t, env, PASSWORD)
  const server = await startServer(t, { ...env, PORT: String(port) })
  t.equal(server.port, port, 'listens on PORT')
  const issuer = `http://localhost:${port}`
  const meta = await (await fetch(`${server.url}/.well-known/oauth-authorization-server`)).json() as { issuer: string, token_endpoint: string }
  t.equal(meta.issuer, issuer, 'the metadata names the port the server listens on')
  t.equal(meta.token_endpoint, `${issuer}/token`)
  const login = await postForm(`${server.url}/token`, { grant_type: 'password', client_id: 'cli', username: 'alice', password: PASSWORD })
  t.equal(login.status, 200)
  const claims = decodeJwt(login.body.access_token)
  t.equal(claims.iss, issuer, 'iss carries the port')
  t.equal(claims.aud, issuer, 'and so does aud, which defaults to the issuer')
})

t.test('TOKENLINE_ISSUER still wins over PORT', async (t) => {
  const dir = tempDir(t)
  const port = await freePort()
  const server = await startServer(t, { TOKENLINE_DB: join(dir, 'tokenline.db'), PORT: String(port), TOKENLINE_ISSUER: 'https://auth.example.com' })
  const meta = await (await fetch(`${server.url}/.well-known/oauth-authorization-server`)).json() as { issuer: string }
  t.equal(meta.issuer, 'https://auth.example.com')
})

t.test('the banner: a pure function of the settings and the facts of the start', async (t) => {
  const facts = { port: 3001, created: true, kid: 'k1', alg: 'ES256', demo: true }
  const sqlite = banner({ host: '127.0.0.1', issuer: 'http://localhost:3001', database: './data/tokenline.db' }, facts)
  t.match(sqlite, /^Tokenline listening on http:\/\/localhost:3001\n/, 'a URL a browser can open, not 127.0.0.1')
  t.match(sqlite, /database +\.\/data\/tokenline\.db \(created now\)\n/)
  t.match(sqlite, /signing key +k1 \(ES256\)\n/)
  t.match(sqlite, /demo +http:\/\/localhost:3001\/\n/)
  t.notMatch(sqlite, /\{/, 'plain lines, no JSON')
  t.notMatch(banner({ host: '127.0.0.1', issuer: 'http://localhost:3001', database: 'x.db' }, { ...facts, created: false }), /created/, 'an existing file is not "created"')

  const pg = banner({ host: '0.0.0.0', issuer: 'https://auth.example.com', database: 'postgres://tl:s3cret-pw@db.internal:5433/tokenline' }, { ...facts, created: false, demo: false })
  t.match(pg, /^Tokenline listening on http:\/\/localhost:3001 \(every interface\)\n/)
  t.match(pg, /database +PostgreSQL db\.internal:5433\/tokenline\n/)
  t.notMatch(pg, /s3cret|tl:/, 'no password, no user')
  t.notMatch(pg, /demo/, 'no demo line without public/')
  t.equal(listenUrl('::1', 80), 'http://localhost:80')
  t.equal(listenUrl('fd00::5', 3000), 'http://[fd00::5]:3000')
  t.equal(listenUrl('10.0.0.5', 3000), 'http://10.0.0.5:3000')
})

/** Every line the process wrote, parsed: the test fails on any line that is not JSON. */
function jsonLines (t: Test, output: string): Array<Record<string, unknown>> {
  const lines = output.split('\n').filter((l) => l !== '')
  return lines.map((l) => {
    try { return JSON.parse(l) as Record<string, unknown> } catch { t.fail(`not a JSON line: ${l}`); return {} }
  })
}

async function someRequests (t: Test, url: string): Promise<void> {
  t.equal((await fetch(`${url}/.well-known/oauth-authorization-server`)).status, 200)
  t.equal((await fetch(`${url}/no-such-route`)).status, 404)
  t.equal((await postForm(`${url}/token`, { grant_type: 'refresh_token', client_id: 'web' })).status, 400)
}

t.test('not a terminal: JSON lines only, and no line per request at the default level', async (t) => {
  const dir = tempDir(t)
  const server = await startServer(t, { TOKENLINE_DB: join(dir, 'tokenline.db'), TOKENLINE_LOG_LEVEL: 'info' })
  await someRequests(t, server.url)
  await server.stop()
  const lines = jsonLines(t, server.output())
  t.ok(lines.some((l) => /Server listening at/.test(String(l.msg))), 'the start is logged')
  t.notMatch(server.output(), /Tokenline listening|signing key/, 'no banner: stdout is a pipe')
  t.same(lines.filter((l) => l.reqId !== undefined), [], 'no request line at info')
})

t.test('TOKENLINE_LOG_LEVEL=debug still logs every request', async (t) => {
  const dir = tempDir(t)
  const server = await startServer(t, { TOKENLINE_DB: join(dir, 'tokenline.db'), TOKENLINE_LOG_LEVEL: 'debug' })
  await someRequests(t, server.url)
  await server.stop()
  const completed = jsonLines(t, server.output()).filter((l) => l.msg === 'request completed')
  t.equal(completed.length, 3, 'one "request completed" line per request')
  t.ok(completed.every((l) => l.level === 20), 'at debug')
})

t.test('a request that failed with an error is still logged at error', async (t) => {
  const seen: Array<[string, string]> = []
  const log = { error: (_o: unknown, m: string) => seen.push(['error', m]), debug: (_o: unknown, m: string) => seen.push(['debug', m]), info: (_o: unknown, m: string) => seen.push(['info', m]) }
  const request = { log } as unknown as FastifyRequest
  const quiet = new QuietRequestLog()
  quiet.requestCompleted(new Error('boom'), request, { log, statusCode: 500, elapsedTime: 1 } as unknown as FastifyReply)
  quiet.defaultErrorLog(new Error('db down'), request, { log, statusCode: 503 } as unknown as FastifyReply)
  quiet.defaultErrorLog(new Error('bad input'), request, { log, statusCode: 400 } as unknown as FastifyReply)
  quiet.requestCompleted(null, request, { log, statusCode: 200, elapsedTime: 1 } as unknown as FastifyReply)
  quiet.incomingRequest(request)
  t.same(seen, [['error', 'request errored'], ['error', 'db down'], ['debug', 'bad input'], ['debug', 'request completed'], ['debug', 'incoming request']])
})
