/*
 * The standalone server as `npm start` runs it, in a real process on a real port: the issuer it derives
 * from PORT, and what it prints when its stdout is not a terminal (JSON lines only, no line per request).
 */
import { join } from 'node:path'
import t from 'tap'
import { decodeJwt } from 'jose'
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
