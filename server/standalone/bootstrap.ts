import type { Tokenline } from '../context.js'

export const WEB_CLIENT_ID = 'web'

/**
 * On first start the server creates the public client `web` for the demo SPA: cookie delivery,
 * password and refresh grants, and the server's own origin (the issuer's) as its one allowed origin.
 * On every later start its origins follow the issuer: it is the server's own client, not the operator's,
 * so a server moved to another public URL keeps a working demo page, and the old origin is no longer
 * allowed (CORS, the cookie's CSRF check). Its other fields are left as they are.
 */
export async function ensureWebClient (tl: Tokenline): Promise<void> {
  const origin = new URL(tl.opts.issuer).origin
  const existing = await tl.store.findClient(WEB_CLIENT_ID)
  if (existing !== undefined) {
    if (existing.origins !== origin) await followIssuer(tl, origin)
    return
  }
  try {
    await tl.store.createClient({
      id: WEB_CLIENT_ID,
      secretDigest: null,
      delivery: 'cookie',
      grants: 'password refresh_token',
      scopes: '',
      origins: origin,
      accessTtl: null,
      idleTtl: null,
      sessionTtl: null,
      now: tl.opts.now()
    })
  } catch (err) {
    // Another process or instance created it between our read and our write: whichever engine's
    // duplicate-key error this is, the client is there now.
    const raced = await tl.store.findClient(WEB_CLIENT_ID)
    if (raced === undefined) throw err
    if (raced.origins !== origin) await followIssuer(tl, origin)
  }
}

async function followIssuer (tl: Tokenline, origin: string): Promise<void> {
  await tl.store.updateClient({
    clientId: WEB_CLIENT_ID,
    change: { origins: origin },
    now: tl.opts.now(),
    events: [{ type: 'client_updated', clientId: WEB_CLIENT_ID, reason: 'issuer_changed', detail: { via: 'server', origins: origin } }]
  })
}
