/*
 * A login must cost the same whether the user has one session or a thousand: the per-account back-off
 * looks at the user's live sessions (to recognise a known device) only when there is a failure to
 * count or a counter to read, never on the ordinary successful login.
 */
import t from 'tap'
import { build } from './helpers.js'

t.test('a successful login of an account without failures does not read its sessions', async (t) => {
  const h = await build(t)
  for (let i = 0; i < 50; i++) t.equal(typeof (await h.login()).refresh_token, 'string', `session ${i + 1} started`)
  const store = h.app.tokenline.store
  const liveSessions = store.liveSessions.bind(store)
  let reads = 0
  store.liveSessions = async (...args) => { reads++; return await liveSessions(...args) }

  t.equal(typeof (await h.login()).refresh_token, 'string', 'the 51st login succeeds')
  t.equal(reads, 0, 'without reading the 50 live sessions')

  // A failure has to be counted under the attempt's source, so now the sessions are read...
  t.equal((await h.login({ password: 'wrong password' })).error, 'invalid_grant', 'a wrong password is refused')
  t.equal(reads, 1, 'the failure looked for a known device once')
  // ...and while the account has a counter, every attempt needs its source to read the right one.
  t.equal(typeof (await h.login()).refresh_token, 'string', 'the right password still works')
  t.equal(reads, 2, 'that login read the sessions to find its counter')
})
