// The peer for `npm run bench`: @node-oauth/oauth2-server (the token endpoint most Node projects would
// pick) mounted in Fastify 5, with an honest better-sqlite3 model so that the comparison measures the
// endpoints and not the storage:
//   - the same SQLite pragmas as Tokenline (WAL, synchronous=NORMAL, foreign keys, busy timeout);
//   - refresh tokens stored as SHA-256 digests, as Tokenline stores them;
//   - rotation by compare-and-set: revokeToken marks the presented token used only if it was unused,
//     so two racing requests cannot both rotate it (the library then saves the successor in a second,
//     separate commit: it has no single transaction, lineage, reuse detection or binding);
//   - access tokens signed by the same fast-jwt ES256 signer as Tokenline's, with the same claims.
// It prints one JSON line once it listens: its port and PEER_SESSIONS refresh tokens to chain from.
import OAuth2Server from '@node-oauth/oauth2-server'
import Database from 'better-sqlite3'
import Fastify from 'fastify'
import { createHash, randomBytes } from 'node:crypto'
import { generateKey, makeSigner } from '../dist/server/tokens/signing-keys.js'

const { Request, Response } = OAuth2Server
const DB_FILE = process.env.PEER_DB ?? ':memory:'
const SESSIONS = Number(process.env.PEER_SESSIONS ?? 0)
const ISSUER = 'http://localhost:3000'
const ACCESS_TTL = 3600
const REFRESH_TTL = 30 * 24 * 3600

const db = new Database(DB_FILE, { timeout: 5000 })
db.pragma('journal_mode = WAL')
db.pragma('synchronous = NORMAL')
db.pragma('foreign_keys = ON')
db.pragma('temp_store = MEMORY')
db.pragma('journal_size_limit = 67108864')
db.exec(`
  CREATE TABLE IF NOT EXISTS clients (id TEXT PRIMARY KEY, grants TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY);
  CREATE TABLE IF NOT EXISTS refresh_tokens (
    digest BLOB PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES clients(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    scope TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
  );
  INSERT OR IGNORE INTO clients (id, grants) VALUES ('bench', 'password refresh_token');
  INSERT OR IGNORE INTO users (id) VALUES ('bench-user');
`)

const q = {
  client: db.prepare('SELECT id, grants FROM clients WHERE id = ?'),
  token: db.prepare('SELECT client_id, user_id, scope, expires_at FROM refresh_tokens WHERE digest = ? AND used_at IS NULL'),
  use: db.prepare('UPDATE refresh_tokens SET used_at = ? WHERE digest = ? AND used_at IS NULL'),
  insert: db.prepare('INSERT INTO refresh_tokens (digest, client_id, user_id, scope, expires_at) VALUES (?, ?, ?, ?, ?)')
}
const digest = (token) => createHash('sha256').update(token).digest()
const sign = makeSigner(generateKey('ES256'))

const model = {
  async getClient (id) {
    const row = q.client.get(id)
    return row === undefined ? null : { id: row.id, grants: row.grants.split(' ') }
  },
  async getRefreshToken (refreshToken) {
    const row = q.token.get(digest(refreshToken))
    if (row === undefined) return null
    return {
      refreshToken,
      refreshTokenExpiresAt: new Date(row.expires_at),
      scope: row.scope.split(' '),
      client: { id: row.client_id },
      user: { id: row.user_id }
    }
  },
  async revokeToken (token) {
    return q.use.run(Date.now(), digest(token.refreshToken)).changes === 1
  },
  async generateAccessToken (client, user, scope) {
    const iat = Math.floor(Date.now() / 1000)
    return sign({
      iss: ISSUER,
      sub: user.id,
      aud: ISSUER,
      exp: iat + ACCESS_TTL,
      iat,
      jti: randomBytes(16).toString('base64url'),
      client_id: client.id,
      scope: (scope ?? []).join(' '),
      sid: randomBytes(16).toString('base64url')
    })
  },
  async saveToken (token, client, user) {
    q.insert.run(digest(token.refreshToken), client.id, user.id, (token.scope ?? []).join(' '), token.refreshTokenExpiresAt.getTime())
    return { ...token, client, user }
  }
}

const oauth = new OAuth2Server({
  model,
  accessTokenLifetime: ACCESS_TTL,
  refreshTokenLifetime: REFRESH_TTL,
  requireClientAuthentication: { password: false, refresh_token: false },
  alwaysIssueNewRefreshToken: true
})

const app = Fastify({ logger: false })
app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
  done(null, Object.fromEntries(new URLSearchParams(body)))
})
app.post('/token', async (request, reply) => {
  const req = new Request({ method: request.method, query: request.query, headers: request.headers, body: request.body })
  const res = new Response({ headers: {} })
  try {
    await oauth.token(req, res)
  } catch (err) {
    return reply.code(err.code ?? 500).header('cache-control', 'no-store').send({ error: err.name, error_description: err.message })
  }
  return reply.code(res.status).headers(res.headers).send(res.body)
})

const tokens = []
for (let i = 0; i < SESSIONS; i++) {
  const refreshToken = randomBytes(32).toString('hex')
  await model.saveToken({ refreshToken, refreshTokenExpiresAt: new Date(Date.now() + REFRESH_TTL * 1000), scope: ['read', 'write'] }, { id: 'bench' }, { id: 'bench-user' })
  tokens.push(refreshToken)
}

const close = () => { app.close().then(() => { db.close(); process.exit(0) }, () => process.exit(1)) }
process.once('SIGTERM', close)
process.once('SIGINT', close)

await app.listen({ port: 0, host: '127.0.0.1' })
process.stdout.write(JSON.stringify({ port: app.server.address().port, tokens }) + '\n')
