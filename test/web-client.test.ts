/*
 * The demo client `web` (server/standalone/bootstrap.ts): created on the first start with the issuer's
 * origin, and following the issuer's origin on every start after, since it is the server's own client.
 */
import { join } from 'node:path'
import t from 'tap'
import { openStore } from '../db/open.js'
import { fromEnv } from '../server/options.js'
import { buildServer } from '../server/standalone/app.js'

/** Starts (builds) the standalone server on `database` with `issuer`, and closes it again. */
async function start (database: string, issuer: string): Promise<void> {
  const { options, server } = fromEnv({
    TOKENLINE_DB: database,
    TOKENLINE_ISSUER: issuer,
    TOKENLINE_LOG_LEVEL: 'silent',
    TOKENLINE_ARGON2_MEMORY: '1024',
    TOKENLINE_ARGON2_TIME: '1'
  })
  const app = await buildServer(options, server)
  await app.close()
}

async function inspect (database: string): Promise<{ origins: string | undefined, delivery: string | undefined, updates: Array<string | null> }> {
  const store = await openStore(database, { pgPoolSize: 1, pgStatementTimeoutMs: 5000 })
  try {
    const web = await store.findClient('web')
    const updates = (await store.listEvents({})).filter((e) => e.type === 'client_updated' && e.clientId === 'web').map((e) => e.reason)
    return { origins: web?.origins, delivery: web?.delivery, updates }
  } finally {
    await store.close()
  }
}

t.test('the web client follows the issuer\'s origin from one start to the next', async (t) => {
  const database = join(t.testdir({}), 'tokenline.db')
  await start(database, 'http://localhost:3000')
  t.match(await inspect(database), { origins: 'http://localhost:3000', delivery: 'cookie', updates: [] }, 'created with the first issuer\'s origin')

  await start(database, 'https://auth.example.com/tokenline')
  t.match(await inspect(database), { origins: 'https://auth.example.com', delivery: 'cookie', updates: ['issuer_changed'] }, 'restarted on another issuer: its origin, and the change recorded')

  await start(database, 'https://auth.example.com/other-path')
  t.match(await inspect(database), { origins: 'https://auth.example.com', updates: ['issuer_changed'] }, 'the same origin: nothing to change, nothing recorded')

  // The operator may change the rest of it; only the origins are the server's.
  const store = await openStore(database, { pgPoolSize: 1, pgStatementTimeoutMs: 5000 })
  await store.updateClient({ clientId: 'web', change: { delivery: 'both', origins: 'https://elsewhere.example' }, now: Date.now(), events: [] })
  await store.close()
  await start(database, 'https://auth.example.com')
  t.match(await inspect(database), { origins: 'https://auth.example.com', delivery: 'both' }, 'origins put back to the issuer\'s, the delivery left alone')
})
