/**
 * tokenline-client.js: a small, dependency-free browser client for Tokenline's cookie delivery.
 *
 * Copy this one file into your SPA (it is an ES module: `<script type="module">` or your bundler).
 *
 *   import { createTokenlineClient } from './tokenline-client.js'
 *   const auth = createTokenlineClient({ clientId: 'web' })
 *   auth.onChange((state) => render(state))     // { signedIn, claims, expiresAt, username }
 *   await auth.restore()                        // page load: signed in again from the cookie alone?
 *   await auth.login('alice', 'correct horse battery staple')
 *   const res = await auth.fetch('/sessions')   // adds the bearer token, refreshes when needed
 *   await auth.logout()
 *
 * Where each credential lives, and why:
 *
 * - The REFRESH token never reaches JavaScript. The server sets it as an
 *   `HttpOnly; Secure; SameSite=Strict; Path=/token` cookie, and the browser sends it only to /token and
 *   /token/revoke. This file never reads, writes or sends it by name: refreshing is a POST with
 *   `credentials: 'same-origin'` and no `refresh_token` parameter. A script injected into the page (XSS)
 *   can therefore not steal it (browser-apps BCP, draft-ietf-oauth-browser-based-apps §6.1.3).
 * - The ACCESS token lives in this module's memory only: never localStorage, sessionStorage, IndexedDB
 *   or a cookie, so it disappears with the tab and nothing persistent holds it. A page reload starts
 *   with no access token and gets a fresh one from the cookie (`restore()`).
 * - A HINT that this browser has a session, in localStorage (`sessionHint`): `{ sub, username }`, no
 *   credential. Set on sign-in and on every successful refresh, removed when the session ends. JavaScript
 *   cannot see the HttpOnly cookie, so without the hint a signed-out page load would have to ask the
 *   server and be refused (400, no cookie); with it, `restore()` sends nothing when there is nothing to
 *   restore, and the name typed at sign-in can be shown again after a reload (display only: the hint
 *   is used only when its `sub` is the restored token's).
 *
 * Refresh tokens rotate: every refresh consumes the cookie's token and sets its successor, and presenting
 * a consumed token again is "reuse" and revokes the whole session (RFC 9700 §4.14.2). Two refreshes
 * racing with the same cookie would therefore be dangerous, so this client makes sure they never race:
 *
 * 1. Within a tab, ONE refresh is in flight at a time: concurrent callers share one promise
 *    (single flight), so ten API calls that find the token expired cause one refresh, not ten.
 * 2. Across tabs, every request that uses or replaces the cookie (refresh, login, logout) runs under the
 *    Web Locks API lock `tokenline-refresh`, so they run one after another, each with the cookie the
 *    previous one left behind. A tab that got a new access token tells the other tabs over a
 *    BroadcastChannel; a tab that was waiting for the lock and meanwhile received a fresh token uses it
 *    and skips its own refresh. If the message comes late, the waiting tab just refreshes after the
 *    first one, with the new cookie: sequential, never a race.
 *
 * The server also forgives a lost race (the same successor is handed out again within a short grace
 * window), but that is a safety net for clients without this coordination, not something to rely on.
 *
 * Throttling (429) and an unavailable server (503) are passing: the session is kept, and the client
 * sends no refresh before the `Retry-After` the server gave; the next call after it tries again.
 *
 * Errors: every failure is a `TokenlineError` carrying the server's RFC 6749 §5.2 `error` (e.g.
 * `invalid_grant`), `error_description`, Tokenline's machine-readable `reason` (e.g.
 * `invalid_credentials`, `reuse_detected`, `session_revoked`) and the HTTP `status`; network failures
 * have `error: 'network_error'`.
 */

/** Defaults; every one can be overridden in `createTokenlineClient(options)`. */
const DEFAULTS = {
  /** Where Tokenline is mounted: '' for this page's origin, or e.g. '/auth' for a plugin prefix. */
  baseUrl: '',
  /** The public client registered with cookie delivery and this page's origin (the server's `web`). */
  clientId: 'web',
  /** Refresh this many seconds before the access token expires (capped at a third of its lifetime). */
  refreshLeeway: 10,
  /** Name of the Web Lock shared by all tabs of this origin. */
  lockName: 'tokenline-refresh',
  /** Name of the BroadcastChannel the tabs of this origin talk over. */
  channelName: 'tokenline',
  /**
   * Credentials mode of the requests to /token. 'same-origin' suits a page served by the Tokenline
   * origin (the demo); a page on another origin listed in the client's origins needs 'include'.
   */
  credentials: 'same-origin',
  /**
   * Seconds before a request to /token or /token/revoke is abandoned. It runs while holding the lock
   * that every tab waits for, so a hung connection must not stall them all.
   */
  timeout: 15,
  /**
   * localStorage key of the session hint (see above), or '' to keep none (restore() then always asks
   * the server).
   */
  sessionHint: 'tokenline-session'
}

/** An RFC 6749 §5.2 error from Tokenline, or a network failure. */
export class TokenlineError extends Error {
  /**
   * @param {string} error RFC 6749 error code, or 'network_error' / 'login_required'
   * @param {{ description?: string, reason?: string, status?: number, retryAfter?: number, cause?: unknown }} [details]
   */
  constructor (error, details = {}) {
    super(details.description ? `${error}: ${details.description}` : error, details.cause === undefined ? undefined : { cause: details.cause })
    this.name = 'TokenlineError'
    /** RFC 6749 §5.2 `error`, e.g. 'invalid_grant'. */
    this.error = error
    /** `error_description`, short and lowercase. */
    this.description = details.description ?? ''
    /** Tokenline's stable `reason` on invalid_grant, e.g. 'invalid_credentials', 'reuse_detected'. */
    this.reason = details.reason ?? ''
    /** HTTP status, 0 for a network failure. */
    this.status = details.status ?? 0
    /** Seconds the server asked to wait before trying again (`Retry-After`, on 429 and 503), else 0. */
    this.retryAfter = details.retryAfter ?? 0
  }
}

/**
 * Reads a JWT's payload for display (`sub`, `sid`, `exp`). This is NOT verification: the browser has no
 * reason to trust or distrust its own token; the resource server verifies it (RFC 9068 §4).
 */
function decodeClaims (jwt) {
  try {
    const part = jwt.split('.')[1] ?? ''
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=')
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))
    return JSON.parse(new TextDecoder().decode(bytes))
  } catch {
    return {}
  }
}

/** Turns a failed /token (or /token/revoke) response into a TokenlineError. */
async function errorFrom (res) {
  let body = {}
  try { body = await res.json() } catch { /* not JSON: keep the status */ }
  // RFC 9110 §10.2.3: delay-seconds (an HTTP-date is not sent by Tokenline; read as no delay).
  const retryAfter = Number.parseInt(res.headers.get('retry-after') ?? '', 10)
  return new TokenlineError(typeof body.error === 'string' ? body.error : 'server_error', {
    description: typeof body.error_description === 'string' ? body.error_description : `HTTP ${res.status}`,
    reason: typeof body.reason === 'string' ? body.reason : '',
    status: res.status,
    retryAfter: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : 0
  })
}

/** The JSON body of a successful response; anything else is the server's fault, reported as such. */
async function jsonOf (res) {
  try {
    return await res.json()
  } catch (cause) {
    throw new TokenlineError('server_error', { description: 'the token endpoint did not answer json', status: res.status, cause })
  }
}

/** A failure that says nothing about the session: throttled (429, RFC 6585 §4), or the server unavailable (5xx). */
const transient = (err) => err instanceof TokenlineError && (err.status === 429 || err.status >= 500 || err.status === 0)

/**
 * Whether a failed refresh means "there is no usable session" (show the login form) rather than a
 * passing problem (network, 429 throttling, 5xx: keep the state and let the caller retry).
 * invalid_grant: revoked, expired, reused or rebound session (the server has cleared the cookie);
 * invalid_request: typically "missing refresh_token", i.e. there is no cookie at all. The throttle also
 * answers `invalid_request`, with 429: the status decides first.
 */
const endsSession = (err) => err instanceof TokenlineError && !transient(err) && (err.error === 'invalid_grant' || err.error === 'invalid_request')

/**
 * Creates a client. Usually one per page; tabs of the same origin find each other by `lockName` and
 * `channelName`.
 * @param {Partial<typeof DEFAULTS>} [options]
 */
export function createTokenlineClient (options = {}) {
  const o = { ...DEFAULTS, ...options }
  const tokenUrl = `${o.baseUrl}/token`
  const revokeUrl = `${o.baseUrl}/token/revoke`

  /**
   * The current access token, in memory only:
   * { accessToken, obtainedAt, expiresAt, refreshAt (ms, this machine's clock), claims, scope }.
   * Expiry is computed from `expires_in` (relative), not from `exp`, so a skewed clock between the
   * browser and the server does not matter.
   * @type {null | { accessToken: string, obtainedAt: number, expiresAt: number, refreshAt: number, claims: Record<string, any>, scope: string }}
   */
  let current = null
  /** The username typed into login() in this tab or told by the tab that logged in; the token has only `sub`. */
  let username = ''
  /** The refresh in flight in this tab, shared by every caller (single flight). */
  let inflight = null
  /** After a 429/503 with Retry-After: no refresh is sent before `until` (ms); callers get `error`. */
  let backoff = { until: 0, error: null }
  const listeners = new Set()

  // --- Cross-tab coordination -------------------------------------------------------------------------

  // BroadcastChannel reaches only same-origin documents of this browser profile: the same trust
  // boundary as the page itself (a script that could listen here could call this client directly).
  const channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel(o.channelName) : null
  if (channel !== null) {
    channel.onmessage = (event) => {
      const m = event.data
      if (m === null || typeof m !== 'object') return
      // Every change of the cookie happens under the lock, one after another, so the newest message
      // describes the cookie as it is now. Tabs share this machine's clock; a message older than our
      // own token (delivered late) is out of date and ignored.
      const newer = (at) => typeof at === 'number' && (current === null || at > current.obtainedAt)
      if (m.type === 'token' && m.token && typeof m.token.accessToken === 'string' && newer(m.token.obtainedAt)) {
        // A refresh elsewhere saves this tab one; a login elsewhere replaced the cookie, maybe with
        // another user's session: follow it either way.
        if (m.cause === 'login' || current === null) username = typeof m.username === 'string' ? m.username : ''
        set(m.token)
      } else if (m.type === 'logout' && newer(m.at)) {
        // Another tab logged out, or found the session dead: the cookie is gone for every tab.
        username = ''
        set(null)
      }
    }
  }

  function broadcast (message) {
    try { channel?.postMessage(message) } catch { /* the channel was closed */ }
  }

  /**
   * Runs `fn` while holding the origin-wide lock, so that requests which send or replace the refresh
   * cookie never overlap, in this tab or any other. Without the Web Locks API (very old browsers) the
   * tab at least serialises its own requests.
   */
  let localQueue = Promise.resolve()
  function withLock (fn) {
    if (typeof navigator !== 'undefined' && navigator.locks && typeof navigator.locks.request === 'function') {
      return navigator.locks.request(o.lockName, fn)
    }
    const run = localQueue.then(() => fn())
    localQueue = run.catch(() => {})
    return run
  }

  // --- Session hint ---------------------------------------------------------------------------------

  /** localStorage, or null where it is missing or refused (then restore() always asks the server). */
  function storage () {
    try { return o.sessionHint !== '' && typeof localStorage !== 'undefined' ? localStorage : null } catch { return null }
  }

  /** The hint: null without storage (unknown), false when no session is known, else { sub, username }. */
  function readHint () {
    const ls = storage()
    if (ls === null) return null
    try {
      const v = JSON.parse(ls.getItem(o.sessionHint) ?? 'null')
      return v !== null && typeof v === 'object' ? v : false
    } catch { return false }
  }

  function writeHint (token) {
    try {
      if (token === null) storage()?.removeItem(o.sessionHint)
      else {
        const sub = String(token.claims.sub ?? '')
        // A refresh in a tab that does not know the name keeps the one stored for this user.
        const known = readHint()
        const name = username !== '' ? username : (known && known.sub === sub && typeof known.username === 'string' ? known.username : '')
        storage()?.setItem(o.sessionHint, JSON.stringify({ sub, username: name }))
      }
    } catch { /* storage full or refused: restore() will ask the server */ }
  }

  // --- State ------------------------------------------------------------------------------------------

  function snapshot () {
    return {
      signedIn: current !== null,
      claims: current ? { ...current.claims } : null,
      expiresAt: current ? current.expiresAt : 0,
      scope: current ? current.scope : '',
      username
    }
  }

  function set (token) {
    current = token
    const s = snapshot()
    for (const fn of listeners) {
      try { fn(s) } catch (err) { console.error('tokenline-client: onChange listener failed', err) }
    }
  }

  /** Stores a successful RFC 6749 §5.1 response and tells the other tabs. */
  function accept (body, cause) {
    if (typeof body.access_token !== 'string' || typeof body.expires_in !== 'number') {
      throw new TokenlineError('server_error', { description: 'token response without access_token or expires_in' })
    }
    const now = Date.now()
    const lifetime = body.expires_in * 1000
    const leeway = Math.min(o.refreshLeeway * 1000, lifetime / 3)
    const token = {
      accessToken: body.access_token,
      obtainedAt: now,
      expiresAt: now + lifetime,
      refreshAt: now + lifetime - leeway,
      claims: decodeClaims(body.access_token),
      scope: typeof body.scope === 'string' ? body.scope : ''
    }
    set(token)
    writeHint(token)
    broadcast({ type: 'token', cause, token, username })
    return token
  }

  const fresh = (t) => t !== null && Date.now() < t.refreshAt

  // --- Requests to Tokenline --------------------------------------------------------------------------

  /** A form POST (RFC 6749 §4.3.2 / §6 use application/x-www-form-urlencoded) that carries the cookie. */
  async function post (url, params) {
    try {
      return await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(params),
        // Sends the HttpOnly refresh cookie and accepts the rotated one. The browser adds
        // `Sec-Fetch-Site: same-origin` and `Origin`, which is what the server's CSRF check wants.
        credentials: o.credentials,
        cache: 'no-store',
        signal: typeof AbortSignal.timeout === 'function' ? AbortSignal.timeout(o.timeout * 1000) : undefined
      })
    } catch (cause) {
      throw new TokenlineError('network_error', { description: 'could not reach the token endpoint', cause })
    }
  }

  /** One refresh_token grant with the cookie alone. Call only while holding the lock. */
  async function refreshNow () {
    // The server asked for a pause (429/503 with Retry-After): honour it without a request.
    if (Date.now() < backoff.until && backoff.error !== null) throw backoff.error
    // No refresh_token parameter: the token is in the HttpOnly cookie, which JavaScript cannot read.
    const res = await post(tokenUrl, { grant_type: 'refresh_token', client_id: o.clientId })
    if (res.ok) {
      backoff = { until: 0, error: null }
      return accept(await jsonOf(res), 'refresh')
    }
    const err = await errorFrom(res)
    if (transient(err)) {
      // Throttled or unavailable: the cookie was not consumed and the session goes on. Keep the state
      // (the access token may still be good for a while) and retry after the server's delay.
      if (err.retryAfter > 0) backoff = { until: Date.now() + err.retryAfter * 1000, error: err }
    } else if (endsSession(err)) {
      // The server refused the cookie (and cleared it), or there was none: nobody is signed in.
      ended()
    }
    throw err
  }

  /** The session is gone, here and in every tab: forget the state and the hint, and tell the others. */
  function ended () {
    username = ''
    writeHint(null)
    set(null)
    broadcast({ type: 'logout', at: Date.now() })
  }

  /**
   * Returns a usable access token, refreshing if `stale` (the token a caller found expired or saw
   * refused) is still the current one. Concurrent callers in this tab share one refresh.
   */
  function refresh (stale = current) {
    if (inflight === null) {
      inflight = withLock(async () => {
        // While we waited for the lock another tab may have refreshed and sent us its token: reuse it
        // instead of spending (rotating) the cookie again.
        if (current !== null && current !== stale && fresh(current)) return current
        return await refreshNow()
      }).finally(() => { inflight = null })
    }
    return inflight
  }

  // --- Public API -------------------------------------------------------------------------------------

  return {
    /**
     * Signs in with the password grant (RFC 6749 §4.3). The server answers with an access token in the
     * body and the refresh token as an HttpOnly cookie. Runs under the lock so that it cannot interleave
     * with another tab's refresh (whose response would otherwise overwrite the new cookie).
     * @returns {Promise<void>} rejects with a TokenlineError (reason 'invalid_credentials' for a bad password)
     */
    async login (user, password) {
      await withLock(async () => {
        const res = await post(tokenUrl, { grant_type: 'password', client_id: o.clientId, username: user, password })
        if (!res.ok) throw await errorFrom(res)
        username = user
        accept(await jsonOf(res), 'login')
      })
    },

    /**
     * Page load: signs in again from the refresh cookie alone (there is no access token after a reload).
     * @returns {Promise<boolean>} whether a session was restored; rejects only on a passing failure
     */
    async restore () {
      const hint = readHint()
      // This browser signed out (or never signed in) here: nothing to restore, and no request that the
      // server could only refuse. Without storage (null) the server is asked.
      if (hint === false) return false
      try {
        await refresh(null)
        // The name typed at sign-in, if the hint is about this very user.
        if (hint !== null && username === '' && typeof hint.username === 'string' && hint.sub === current?.claims.sub) {
          username = hint.username
          set(current)
        }
        return true
      } catch (err) {
        if (endsSession(err)) return false
        throw err
      }
    },

    /**
     * `fetch()` with `Authorization: Bearer <access token>` (RFC 6750 §2.1). Refreshes first when the
     * token is expired or about to expire, and once more on a 401 (RFC 6750 §3.1 invalid_token: the token
     * expired early, a signing key changed, ...), then retries the request once.
     * @returns {Promise<Response>} the response; rejects with a TokenlineError when nobody is signed in
     */
    async fetch (input, init = {}) {
      // A Request's body can be read only once: keep a pristine copy for the retry.
      const request = new Request(input, init)
      const send = (token) => {
        const headers = new Headers(request.headers)
        headers.set('authorization', `Bearer ${token.accessToken}`)
        return fetch(new Request(request.clone(), { headers }))
      }
      let token = fresh(current) ? current : await refresh(current)
      const res = await send(token)
      if (res.status !== 401) return res
      token = await refresh(token)
      return await send(token)
    },

    /**
     * Logs out: POST /token/revoke with the cookie (RFC 7009; with no `token` parameter Tokenline revokes
     * the cookie's session and clears the cookie), forgets the access token, and tells the other tabs.
     * The local state is cleared even if the server could not be reached; the error is still reported,
     * because then the session may still be alive on the server.
     */
    async logout () {
      try {
        await withLock(async () => {
          const res = await post(revokeUrl, { client_id: o.clientId })
          if (res.ok) return
          const err = await errorFrom(res)
          // 400 invalid_request: no cookie was sent (it expired, or was cleared): nothing left to revoke.
          if (res.status === 400 && err.error === 'invalid_request') return
          throw err
        })
      } finally {
        ended()
      }
    },

    /** Forces a refresh now (shared with any refresh already in flight). */
    async refresh () {
      await refresh(current)
    },

    /** Calls `fn(state)` on every change: sign in, refresh (here or in another tab), sign out. */
    onChange (fn) {
      listeners.add(fn)
      return () => listeners.delete(fn)
    },

    /** { signedIn, claims, expiresAt, scope, username } of this tab, without the token itself. */
    get state () {
      return snapshot()
    },

    /** Stops listening to the other tabs. */
    close () {
      channel?.close()
      listeners.clear()
    }
  }
}
