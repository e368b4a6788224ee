import type { Tokenline } from '../context.js'

export const WEB_CLIENT_ID = 'web'

/**
 * On first start the server creates the public client `web` for the demo SPA: cookie delivery,
 * password and refresh grants, and the server's own origin (the issuer's) as its one allowed origin.
 */
export async function ensureWebClient (tl: Tokenline): Promise<void> {
  if (await tl.store.findClient(WEB_CLIENT_ID) !== undefined) return
  try {
    await tl.store.createClient({
      id: WEB_CLIENT_ID,
      secretDigest: null,
      delivery: 'cookie',
      grants: 'password refresh_token',
      scopes: '',
      origins: new URL(tl.opts.issuer).origin,
      accessTtl: null,
      idleTtl: null,
      sessionTtl: null,
      now: tl.opts.now()
    })
  } catch (err) {
    // Another process or instance created it between our read and our write: whichever engine's
    // duplicate-key error this is, the client is there now.
    if (await tl.store.findClient(WEB_CLIENT_ID) === undefined) throw err
  }
}
