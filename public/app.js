// The Tokenline demo page. No framework and no build step: the DOM, and the client in tokenline-client.js.
// Everything the server sends is put into the page with textContent, never innerHTML (a user agent
// string is attacker-controlled), and the page's CSP allows no inline script or style.
import { createTokenlineClient, TokenlineError } from './tokenline-client.js'

const auth = createTokenlineClient({ clientId: 'web' })
const $ = (id) => document.getElementById(id)

// --- Rendering ------------------------------------------------------------------------------------------

let wasSignedIn = false

function render (state) {
  document.body.dataset.state = state.signedIn ? 'signed-in' : 'signed-out'
  // When the access token expires (ms since the epoch): not a secret, and what the tests check.
  document.body.dataset.expiresAt = String(state.expiresAt)
  $('loading').hidden = true
  $('login-view').hidden = state.signedIn
  $('app-view').hidden = !state.signedIn
  if (state.signedIn) {
    const sub = String(state.claims?.sub ?? '')
    $('user').textContent = state.username || '(signed in before this page was loaded: the token carries only sub)'
    $('sub').textContent = sub
    $('sid').textContent = String(state.claims?.sid ?? '')
    tick()
    // Signed in just now (login, reload, or another tab): show the sessions.
    if (!wasSignedIn) loadSessions()
  } else {
    $('sessions-body').replaceChildren()
    $('password').value = ''
  }
  wasSignedIn = state.signedIn
}

/** The access token's remaining life, counting down. It is refreshed on the next API call, not by a timer. */
function tick () {
  const state = auth.state
  if (!state.signedIn) return
  const left = Math.ceil((state.expiresAt - Date.now()) / 1000)
  const el = $('expiry')
  el.classList.toggle('expired', left <= 0)
  el.textContent = left > 0 ? `${left} s` : 'expired: the next API call refreshes it silently'
}
setInterval(tick, 250)

function status (message, isError = false) {
  const el = $('status')
  el.textContent = message
  el.classList.toggle('error', isError)
}

/** A readable line for a failure: the RFC 6749 error and Tokenline's reason. */
function describe (err) {
  if (err instanceof TokenlineError) {
    if (err.reason === 'invalid_credentials') return 'Wrong username or password.'
    const code = err.reason ? `${err.error}, reason ${err.reason}` : err.error
    const hint = err.reason === 'csrf_rejected' ? `: ${window.location.origin} is not an allowed origin of the client` : ''
    return `${err.description || 'request failed'} (${code})${hint}`
  }
  return String(err?.message ?? err)
}

const when = (iso) => iso ? new Date(iso).toLocaleString() : ''

/** The column names of the sessions table, in its order (index.html). */
const LABELS = ['Session', 'Client', 'Created', 'Last used', 'User agent', 'IP']

function renderSessions (sessions) {
  const rows = sessions.map((s) => {
    const tr = document.createElement('tr')
    tr.dataset.sessionId = s.id
    tr.dataset.current = String(Boolean(s.current))
    const cells = [
      s.current ? `${s.id} (this one)` : s.id,
      s.client_id,
      when(s.created_at),
      when(s.last_used_at),
      s.user_agent ?? '',
      s.ip ?? ''
    ]
    cells.forEach((text, i) => {
      const td = document.createElement('td')
      td.textContent = String(text ?? '')
      // On a narrow screen each row is a card, and each cell shows its column's name (style.css).
      td.dataset.label = LABELS[i] ?? ''
      if (i === 0 && s.current) td.className = 'current'
      if (i === 4) td.className = 'ua'
      tr.append(td)
    })
    const action = document.createElement('td')
    if (!s.current) {
      const b = document.createElement('button')
      b.type = 'button'
      b.className = 'end-session'
      b.textContent = 'End session'
      b.addEventListener('click', () => endSession(s.id))
      action.append(b)
    }
    tr.append(action)
    return tr
  })
  $('sessions-body').replaceChildren(...rows)
}

// --- Calls to the protected API -------------------------------------------------------------------------

/** Runs an API call; a session that ended meanwhile shows the login form (the client already switched). */
async function api (method, url) {
  const res = await auth.fetch(url, { method })
  if (res.status === 401) throw new TokenlineError('invalid_token', { description: 'the access token was refused', status: 401 })
  if (!res.ok) {
    let body = {}
    try { body = await res.json() } catch { /* not JSON */ }
    throw new TokenlineError(body.error ?? 'server_error', { description: body.error_description ?? `HTTP ${res.status}`, status: res.status })
  }
  return res.status === 204 ? null : await res.json().catch(() => null)
}

async function loadSessions () {
  try {
    const body = await api('GET', '/sessions')
    renderSessions(Array.isArray(body?.sessions) ? body.sessions : [])
  } catch (err) {
    status(describe(err), true)
  } finally {
    // When the last attempt finished, successful or not (the browser tests wait for it).
    document.body.dataset.sessionsLoadedAt = String(performance.now())
  }
}

async function endSession (id) {
  try {
    await api('DELETE', `/sessions/${encodeURIComponent(id)}`)
    status('Session ended.')
  } catch (err) {
    status(describe(err), true)
  }
  await loadSessions()
}

// --- Wiring ---------------------------------------------------------------------------------------------

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault()
  const button = $('login-button')
  button.disabled = true
  status('')
  try {
    await auth.login($('username').value.trim(), $('password').value)
  } catch (err) {
    status(describe(err), true)
  } finally {
    button.disabled = false
  }
})

$('reload-sessions').addEventListener('click', () => { status(''); loadSessions() })

$('end-others').addEventListener('click', async () => {
  try {
    await api('DELETE', '/sessions?scope=others')
    status('All other sessions ended.')
  } catch (err) {
    status(describe(err), true)
  }
  await loadSessions()
})

$('logout').addEventListener('click', async () => {
  try {
    await auth.logout()
    status('Logged out.')
  } catch (err) {
    status(`Logged out here, but the server did not confirm: ${describe(err)}`, true)
  }
})

auth.onChange((state) => {
  if (!state.signedIn && wasSignedIn && $('status').textContent === '') status('Signed out.')
  render(state)
})

// The `web` client accepts requests only from the issuer's origin (CSRF defence). Opened under another
// name (http://127.0.0.1:3000 instead of http://localhost:3000), sign-in would be refused: say so.
fetch('/.well-known/oauth-authorization-server').then((r) => r.json()).then((meta) => {
  const expected = new URL(meta.issuer).origin
  if (expected !== window.location.origin) {
    status(`This page is open at ${window.location.origin}, but the demo client only accepts ${expected}: open ${expected}/ to sign in.`, true)
  }
}).catch(() => { /* no metadata: nothing to compare */ })

// Page load: the access token did not survive the reload (it lived in memory); the cookie did.
auth.restore().then((restored) => {
  if (!restored) render(auth.state)
}, (err) => {
  render(auth.state)
  status(`Could not check for a session: ${describe(err)}`, true)
})
