/*
 * The demo SPA (public/) and its browser client in real headless Chromium, against the real standalone
 * server (`node dist/server/standalone/main.js`) on a real socket and database file. The access token lives 3 s,
 * so expiry is observed on the browser's own clock; every wait is for a condition, not a fixed time.
 *
 * The server runs with the reuse grace window OFF: if two tabs ever raced each other with the same
 * refresh cookie, the server would see reuse and revoke the session. The client must not need the grace.
 */
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import t, { type Test } from 'tap'
import type { Browser, BrowserContext, Page, Request, Response } from 'playwright-core'
import { PASSWORD } from './helpers.js'
import { CHEAP_ARGON2_ENV, cleanEnv, createDatabase, freePort, MAIN, ROOT, runCli } from './processes.js'
import { COOKIE_NAME } from './set-cookie.js'

const CHROMIUM = '/usr/bin/chromium'
const ACCESS_TTL = 3
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']

/**
 * Starts the standalone server on the port `base` names and waits until it serves the demo page; its
 * issuer, and so the `web` client's origin, must be known before it starts, hence no PORT=0 here.
 */
async function serveDemo (t: Test, environment: NodeJS.ProcessEnv, base: string): Promise<() => string> {
  const child = spawn(process.execPath, [MAIN], { env: environment, cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let exited = false
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  const exit = new Promise<void>((resolve) => child.on('exit', () => { exited = true; resolve() }))
  t.teardown(async () => { if (!exited) child.kill('SIGTERM'); await exit })
  const deadline = Date.now() + 20_000
  for (;;) {
    if (exited) throw new Error(`server exited:\n${out}`)
    try {
      const res = await fetch(`${base}/`)
      if (res.ok) return () => out
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error(`server did not start:\n${out}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** One POST /token (or /token/revoke) exchange seen by the browser. */
interface TokenCall {
  page: Page
  url: string
  params: URLSearchParams
  status: number
  body: Record<string, unknown>
}

const state = async (page: Page, want: 'signed-in' | 'signed-out'): Promise<void> => {
  await page.waitForFunction((w) => document.body.dataset.state === w, want)
}

/** Clicks "Reload sessions" and waits for the table to be rendered from a fresh GET /sessions. */
async function reloadSessions (page: Page): Promise<Response> {
  const before = await page.evaluate(() => document.body.dataset.sessionsLoadedAt ?? '0')
  const [res] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === '/sessions' && r.request().method() === 'GET'),
    page.click('#reload-sessions')
  ])
  await page.waitForFunction((b) => (document.body.dataset.sessionsLoadedAt ?? '0') !== b, before)
  return res
}

const sessionRows = async (page: Page): Promise<Array<{ id: string, current: boolean }>> =>
  await page.$$eval('#sessions-body tr', (rows) => rows.map((r) => ({ id: (r as HTMLElement).dataset.sessionId ?? '', current: (r as HTMLElement).dataset.current === 'true' })))

if (!existsSync(CHROMIUM)) {
  t.plan(0, 'chromium not installed (apt-get install chromium)')
} else {
  const { chromium } = await import('playwright-core')
  // A private directory, not t.testdir(): that one is named after this file, and two runs of the suite
  // at once (two developers, or CI beside a watcher) would share it.
  const dir = mkdtempSync(join(tmpdir(), 'tokenline-browser-'))
  const dbFile = join(dir, 'tokenline.db')
  const port = await freePort()
  const base = `http://localhost:${port}`
  const settings = {
    TOKENLINE_DB: dbFile,
    PORT: String(port),
    HOST: '127.0.0.1',
    TOKENLINE_ISSUER: base,
    TOKENLINE_ACCESS_TTL: String(ACCESS_TTL),
    TOKENLINE_REUSE_GRACE: '0',
    TOKENLINE_LOG_LEVEL: 'warn',
    ...CHEAP_ARGON2_ENV
  }
  if (!existsSync(MAIN)) throw new Error('dist/ is missing: run npm run build first (npm test does)')
  await createDatabase(dbFile)
  const user = await runCli(['user', 'add', 'alice'], { env: settings, input: `${PASSWORD}\n` })
  if (user.code !== 0) throw new Error(`tokenline user add exited ${String(user.code)}: ${user.stderr}`)
  const serverOutput = await serveDemo(t, cleanEnv(settings), base)

  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
  t.teardown(() => browser.close())
  t.teardown(() => rmSync(dir, { recursive: true, force: true })) // last: after the server has stopped
  const context: BrowserContext = await browser.newContext()
  // Fail fast: every wait here is for something that takes well under a second (expiry waits say so).
  context.setDefaultTimeout(10_000)

  // Every exchange with /token and /token/revoke, from every tab of the context, with its JSON body.
  const calls: TokenCall[] = []
  const pending: Array<Promise<void>> = []
  context.on('response', (res: Response) => {
    const req: Request = res.request()
    const path = new URL(req.url()).pathname
    if (req.method() !== 'POST' || (path !== '/token' && path !== '/token/revoke')) return
    pending.push((async () => {
      let body: Record<string, unknown> = {}
      try { body = await res.json() } catch { /* revoke answers an empty body */ }
      calls.push({ page: req.frame().page(), url: path, params: new URLSearchParams(req.postData() ?? ''), status: res.status(), body })
    })())
  })
  const settled = async (): Promise<TokenCall[]> => { await Promise.all(pending); return calls }
  const refreshes = (from = 0): TokenCall[] => calls.slice(from).filter((c) => c.params.get('grant_type') === 'refresh_token')

  /** Security events straight from the server's database file (WAL allows a concurrent reader). */
  const events = (types: string[]): Array<{ type: string, reason: string | null }> => {
    const db = new Database(dbFile, { readonly: true, fileMustExist: true })
    try {
      return db.prepare(`SELECT type, reason FROM security_events WHERE type IN (${types.map(() => '?').join(',')})`).all(...types) as Array<{ type: string, reason: string | null }>
    } finally {
      db.close()
    }
  }
  const races = (): unknown[] => events(['reuse_detected', 'refresh_replayed'])

  // Uncaught exceptions in any tab of any context.
  const pageErrors: string[] = []
  const watchErrors = (c: BrowserContext): void => {
    c.on('weberror', (e) => { pageErrors.push(e.error().message) })
    // A CSP violation is only a console message; the page must need nothing its CSP forbids.
    c.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) pageErrors.push(m.text()) })
  }
  watchErrors(context)
  const page = await context.newPage()
  let sid = ''

  /** Every response of status 400 or more that `p` receives until the returned function is called. */
  const failing = (p: Page): () => string[] => {
    const seen: string[] = []
    const on = (r: Response): void => { if (r.status() >= 400) seen.push(`${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`) }
    p.on('response', on)
    return () => { p.off('response', on); return seen }
  }

  await t.test('a signed-out page load makes no failing request', async (t) => {
    const stop = failing(page)
    await page.goto(`${base}/`)
    await state(page, 'signed-out')
    await page.waitForLoadState('networkidle')
    t.same(stop(), [], 'no 4xx or 5xx: the client knows there is no session to restore')
    t.same(refreshes(), [], 'and sends no refresh')
  })

  await t.test('log in through the form', async (t) => {
    await page.goto(`${base}/`)
    await state(page, 'signed-out')
    t.ok(await page.isVisible('#login-form'), 'the login form is shown when there is no session')
    await page.fill('#username', 'alice')
    await page.fill('#password', 'wrong password')
    await page.click('#login-button')
    await page.waitForFunction(() => (document.getElementById('status')?.textContent ?? '') !== '')
    t.match(await page.textContent('#status'), /wrong username or password/i, 'a wrong password is reported')
    t.equal(await page.evaluate(() => document.body.dataset.state), 'signed-out')

    await page.fill('#password', PASSWORD)
    await page.click('#login-button')
    await state(page, 'signed-in')
    t.match(await page.textContent('#expiry'), /^[1-3] s$/, 'the access token expiry counts down from 3 s')
    const left = await page.evaluate(() => Number(document.body.dataset.expiresAt) - Date.now())
    t.ok(left > 0 && left <= ACCESS_TTL * 1000, `the token expires within ${ACCESS_TTL} s (${left} ms left)`)
    await page.waitForSelector('#sessions-body tr[data-current="true"]')
    t.equal(await page.textContent('#user'), 'alice', 'shows the user')
    sid = (await page.textContent('#sid')) ?? ''
    t.ok(sid.length > 0, 'shows the session id')
    t.match(await page.textContent('#sub'), /^\S+$/, 'shows the sub claim')
    t.same(await sessionRows(page), [{ id: sid, current: true }], 'GET /sessions lists this session as the current one')

    const login = (await settled()).find((c) => c.params.get('grant_type') === 'password' && c.status === 200)
    t.ok(login, 'logged in with the password grant')
    t.equal(login?.params.get('client_id'), 'web')
    t.notOk('refresh_token' in (login?.body ?? {}), 'no refresh token in the JSON body')
  })

  await t.test('the refresh token is never visible to JavaScript', async (t) => {
    const jar = (await context.cookies(`${base}/token`)).filter((c) => c.name === COOKIE_NAME)
    t.equal(jar.length, 1, 'the refresh cookie is in the browser\'s cookie jar')
    t.match(jar[0], { httpOnly: true, secure: true, sameSite: 'Strict', path: '/token' })
    t.match(jar[0]?.value, /^tlrt_/)
    const visible = await page.evaluate(() => document.cookie)
    t.notMatch(visible, /tokenline|tlrt_/, 'document.cookie does not show it')
    // The access token lives in memory only.
    const access = String(calls.find((c) => c.status === 200)?.body.access_token ?? '')
    t.ok(access.length > 0)
    const stored = await page.evaluate(() => JSON.stringify([{ ...localStorage }, { ...sessionStorage }, document.cookie]))
    t.notOk(stored.includes(access.slice(-20)), 'no access token in localStorage, sessionStorage or cookies')
    t.notOk(stored.includes('tlrt_'), 'no refresh token in web storage')
  })

  await t.test('a reload stays signed in through the cookie alone', async (t) => {
    const from = calls.length
    await page.reload()
    await state(page, 'signed-in')
    await page.waitForSelector('#sessions-body tr[data-current="true"]')
    t.equal(await page.textContent('#sid'), sid, 'the same session')
    t.equal(await page.textContent('#user'), 'alice', 'and shows who is signed in')
    const r = refreshes(from)
    t.equal(r.length, 1, 'one refresh on page load')
    t.equal(r[0]?.status, 200)
    t.notOk(r[0]?.params.has('refresh_token'), 'the refresh request carried no refresh_token parameter: only the cookie')
    t.equal(await page.evaluate(() => document.cookie), '', 'document.cookie is still empty')
    const hint = await page.evaluate(() => localStorage.getItem('tokenline-session') ?? '')
    t.notOk(/tlrt_|eyJ/.test(hint), 'the session hint in localStorage holds no token')
  })

  await t.test('an expired access token is refreshed silently before the next API call', async (t) => {
    const from = calls.length
    const expiresAt = async (): Promise<number> => await page.evaluate(() => Number(document.body.dataset.expiresAt))
    const old = await expiresAt()
    // The browser's own clock: the countdown reaches zero after at most ACCESS_TTL seconds.
    await page.waitForSelector('#expiry.expired', { timeout: (ACCESS_TTL + 5) * 1000 })
    const res = await reloadSessions(page)
    t.equal(res.status(), 200, 'GET /sessions succeeded')
    await settled()
    const r = refreshes(from)
    t.equal(r.length, 1, 'exactly one refresh')
    t.equal(r[0]?.status, 200)
    const fresh = String(r[0]?.body.access_token ?? '')
    t.equal(res.request().headers().authorization, `Bearer ${fresh}`, 'the API call used the new access token')
    // The new token was obtained after the old one expired, so it expires a whole lifetime later.
    t.ok(await expiresAt() >= old + ACCESS_TTL * 1000, 'the countdown restarted with the new token')
    t.same(races(), [], 'no reuse detected')
  })

  await t.test('three tabs refreshing at the same moment all stay signed in', async (t) => {
    const tabs = [page, await context.newPage(), await context.newPage()]
    for (const p of tabs.slice(1)) {
      await p.goto(`${base}/`)
      await state(p, 'signed-in')
      await p.waitForSelector('#sessions-body tr')
    }
    // Wait until every tab's access token has expired, then press "Reload sessions" in all three at the
    // same instant on the browser's clock: each tab needs a refresh, and they share one cookie.
    for (const p of tabs) await p.waitForSelector('#expiry.expired', { timeout: (ACCESS_TTL + 5) * 1000 })
    await settled()
    const from = calls.length
    const before = await Promise.all(tabs.map(async (p) => await p.evaluate(() => document.body.dataset.sessionsLoadedAt ?? '0')))
    const apiCalls = tabs.map(async (p) => await p.waitForResponse((r) => new URL(r.url()).pathname === '/sessions'))
    await Promise.all(tabs.map(async (p) => await p.evaluate((at) => {
      setTimeout(() => document.getElementById('reload-sessions')?.click(), at - Date.now())
    }, Date.now() + 300)))
    const results = await Promise.all(apiCalls)
    await Promise.all(tabs.map(async (p, i) => await p.waitForFunction((b) => (document.body.dataset.sessionsLoadedAt ?? '0') !== b, before[i])))

    t.same(results.map((r) => r.status()), [200, 200, 200], 'every tab\'s API call succeeded')
    for (const p of tabs) {
      t.equal(await p.evaluate(() => document.body.dataset.state), 'signed-in', 'still signed in')
      t.equal(await p.textContent('#sid'), sid, 'on the same session')
      t.equal(await p.textContent('#status'), '', 'no error shown')
    }
    await settled()
    const r = refreshes(from)
    t.ok(r.length >= 1 && r.length <= 3, `between one and three refreshes (${r.length}: the tabs share fresh tokens)`)
    t.ok(r.every((c) => c.status === 200), 'every refresh succeeded')
    t.same(races(), [], 'the server never saw the same refresh token twice (no reuse, no replay)')
    // And the session is healthy on the server: the protected API answers.
    t.equal((await reloadSessions(tabs[2] as Page)).status(), 200)

    // A tab's message delivered late (a logout from before the current token was obtained) is ignored.
    await (tabs[1] as Page).evaluate(() => {
      const c = new BroadcastChannel('tokenline')
      c.postMessage({ type: 'logout', at: Date.now() - 60_000 })
      c.close()
    })
    await reloadSessions(tabs[0] as Page)
    for (const p of tabs) t.equal(await p.evaluate(() => document.body.dataset.state), 'signed-in', 'a stale logout message changes nothing')
  })

  await t.test('ending another session from the list', async (t) => {
    // A second device: another browser context with its own cookie jar.
    const other = await browser.newContext()
    other.setDefaultTimeout(10_000)
    watchErrors(other)
    t.teardown(() => other.close())
    const device = await other.newPage()
    await device.goto(`${base}/`)
    await state(device, 'signed-out')
    await device.fill('#username', 'alice')
    await device.fill('#password', PASSWORD)
    await device.click('#login-button')
    await state(device, 'signed-in')
    const otherSid = (await device.textContent('#sid')) ?? ''

    await reloadSessions(page)
    t.same((await sessionRows(page)).map((r) => r.id).sort(), [sid, otherSid].sort(), 'both sessions are listed')
    await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'DELETE'),
      page.click(`#sessions-body tr[data-session-id="${otherSid}"] button.end-session`)
    ])
    await page.waitForFunction(() => document.querySelectorAll('#sessions-body tr').length === 1)
    t.same(await sessionRows(page), [{ id: sid, current: true }], 'only this session is left')

    // The other device finds out on its next API call: its token is refused, the refresh fails.
    await device.click('#reload-sessions')
    await state(device, 'signed-out')
    t.match(await device.textContent('#status'), /session_revoked|invalid_token|signed out/i, 'the other device is told')
  })

  await t.test('at 390 px wide the page does not overflow and the user agent stays readable', async (t) => {
    const before = page.viewportSize()
    await page.setViewportSize({ width: 390, height: 844 })
    t.teardown(async () => { if (before !== null) await page.setViewportSize(before) })
    await reloadSessions(page)
    t.ok((await sessionRows(page)).length >= 1, 'the sessions are listed')
    const width = await page.evaluate(() => document.documentElement.scrollWidth)
    t.ok(width <= 390, `no horizontal overflow (scrollWidth ${width})`)
    // A letter per line would make the cell a few px wide and very tall.
    const ua = await page.$$eval('#sessions-body td.ua', (cells) => cells.map((c) => {
      const r = c.getBoundingClientRect()
      return { width: r.width, lines: Math.round(r.height / parseFloat(getComputedStyle(c).lineHeight)) }
    }))
    t.ok(ua.length >= 1 && ua.every((c) => c.width >= 250 && c.lines <= 4), `the user agent cells are wide and a few lines tall: ${JSON.stringify(ua)}`)
  })

  await t.test('log out ends the session in every tab', async (t) => {
    const tabs = context.pages()
    const last = [...(await settled())].reverse().find((c) => c.status === 200 && typeof c.body.access_token === 'string')
    const access = String(last?.body.access_token)
    const [revoke] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === '/token/revoke'),
      page.click('#logout')
    ])
    t.equal(revoke.status(), 200, 'POST /token/revoke answered 200')
    for (const p of tabs) await state(p, 'signed-out')
    // state() waits for the signed-out form and fails the test on timeout: reaching here is the assertion.
    t.pass('every tab shows the login form')
    t.same((await context.cookies(`${base}/token`)).filter((c) => c.name === COOKIE_NAME), [], 'the refresh cookie is cleared')

    const api = await fetch(`http://127.0.0.1:${port}/sessions`, { headers: { authorization: `Bearer ${access}` } })
    t.equal(api.status, 401, 'the last access token is refused by GET /sessions at once')
    t.match(await api.json(), { error: 'invalid_token' })
    t.match(api.headers.get('www-authenticate'), /^Bearer /)

    const stop = failing(page)
    await page.reload()
    await state(page, 'signed-out')
    t.ok(await page.isVisible('#login-form'), 'a reload shows the login form')
    await page.waitForLoadState('networkidle')
    t.same(stop(), [], 'with no failing request')
    t.same(events(['session_revoked']).filter((e) => e.reason === 'logout').length, 1, 'the session was revoked as a logout')
  })

  await t.test('the page opened under another origin is refused sign-in (login CSRF defence)', async (t) => {
    // 127.0.0.1 is the same server but not the `web` client's origin (the issuer's, localhost).
    const other = await browser.newContext()
    other.setDefaultTimeout(10_000)
    t.teardown(() => other.close())
    const p = await other.newPage()
    await p.goto(`http://127.0.0.1:${port}/`)
    await state(p, 'signed-out')
    await p.waitForFunction(() => /open http:\/\/localhost:\d+\/ to sign in/.test(document.getElementById('status')?.textContent ?? ''))
    // waitForFunction throws on timeout: reaching here is the assertion.
    t.pass('the page says which origin to open')
    await p.fill('#username', 'alice')
    await p.fill('#password', PASSWORD)
    const [res] = await Promise.all([
      p.waitForResponse((r) => new URL(r.url()).pathname === '/token' && r.request().method() === 'POST' && r.request().postData()?.includes('grant_type=password') === true),
      p.click('#login-button')
    ])
    t.equal(res.status(), 403, 'the password grant from a foreign origin is refused')
    t.match(await res.json(), { error: 'invalid_request', reason: 'csrf_rejected' })
    t.same(await other.cookies(), [], 'no cookie was set')
    await p.waitForFunction(() => /csrf_rejected/.test(document.getElementById('status')?.textContent ?? ''))
    t.equal(await p.evaluate(() => document.body.dataset.state), 'signed-out')
  })

  await t.test('a throttled refresh (429) keeps the session, and a later one goes on with it', async (t) => {
    // A server of its own, whose failures budget three bogus refreshes spend: the page's next refresh
    // from the same address is answered 429 until the window ends.
    const dir2 = mkdtempSync(join(tmpdir(), 'tokenline-browser-429-'))
    t.teardown(() => rmSync(dir2, { recursive: true, force: true }))
    const port2 = await freePort()
    const base2 = `http://localhost:${port2}`
    const settings2 = {
      ...settings,
      TOKENLINE_DB: await createDatabase(join(dir2, 'tokenline.db')),
      PORT: String(port2),
      TOKENLINE_ISSUER: base2,
      TOKENLINE_THROTTLE_FAILURES: '3',
      TOKENLINE_THROTTLE_FAILURES_WINDOW: '4'
    }
    t.equal((await runCli(['user', 'add', 'alice'], { env: settings2, input: `${PASSWORD}\n` })).code, 0)
    await serveDemo(t, cleanEnv(settings2), base2)
    const ctx = await browser.newContext()
    ctx.setDefaultTimeout(10_000)
    watchErrors(ctx)
    t.teardown(() => ctx.close())
    const p = await ctx.newPage()
    await p.goto(`${base2}/`)
    await state(p, 'signed-out')
    await p.fill('#username', 'alice')
    await p.fill('#password', PASSWORD)
    await p.click('#login-button')
    await state(p, 'signed-in')
    const sid2 = (await p.textContent('#sid')) ?? ''
    await p.waitForSelector('#expiry.expired', { timeout: (ACCESS_TTL + 5) * 1000 })

    let status = 0
    for (let i = 0; i < 10 && status !== 429; i++) {
      const r = await fetch(`http://127.0.0.1:${port2}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'grant_type=refresh_token&client_id=web&refresh_token=tlrt_bogus' })
      status = r.status
    }
    t.equal(status, 429, 'the failures budget of 127.0.0.1 is spent')

    const [refused] = await Promise.all([
      p.waitForResponse((r) => new URL(r.url()).pathname === '/token' && r.request().postData()?.includes('grant_type=refresh_token') === true),
      p.click('#reload-sessions')
    ])
    t.equal(refused.status(), 429, 'the page\'s refresh is throttled')
    const retryAfter = Number(refused.headers()['retry-after'])
    t.ok(retryAfter >= 1 && retryAfter <= 4, `with Retry-After (${retryAfter} s)`)
    await p.waitForFunction(() => /too many requests/.test(document.getElementById('status')?.textContent ?? ''))
    t.equal(await p.evaluate(() => document.body.dataset.state), 'signed-in', 'still signed in: 429 is not the end of the session')
    t.equal(await p.textContent('#sid'), sid2)
    t.equal((await ctx.cookies(`${base2}/token`)).filter((c) => c.name === COOKIE_NAME).length, 1, 'the refresh cookie is kept')
    t.not(await p.evaluate(() => localStorage.getItem('tokenline-session')), null, 'and so is the session hint')

    // After Retry-After (the window has ended by then), the next API call refreshes with the same cookie.
    await new Promise((resolve) => setTimeout(resolve, retryAfter * 1000 + 300))
    const res = await reloadSessions(p)
    t.equal(res.status(), 200, 'the API call succeeds after the pause')
    t.equal(await p.evaluate(() => document.body.dataset.state), 'signed-in')
    t.equal(await p.textContent('#sid'), sid2, 'on the same session')
  })

  await t.test('no script errors and no reuse anywhere', async (t) => {
    t.same(pageErrors, [], 'no uncaught errors and no CSP violations in any tab')
    t.same(races(), [])
    t.notMatch(serverOutput(), /tlrt_/, 'the server log never shows a refresh token')
  })
}
