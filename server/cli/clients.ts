import { randomBytes } from 'node:crypto'
import { secretDigest } from '../http/client-auth.js'
import { parseCommand, subcommand, withStore } from './command.js'
import { CliError, iso, table, type Io } from './io.js'

const ADD_USAGE = 'tokenline client add <client_id> [--confidential] [--delivery cookie|body|both] [--origin <url>]... [--grants password,refresh_token] [--scopes "a b"]'
const USAGE = `${ADD_USAGE} | client list`

const GRANTS = new Set(['password', 'refresh_token'])
const DELIVERIES = ['cookie', 'body', 'both'] as const
type Delivery = typeof DELIVERIES[number]
const CLIENT_ID = /^[A-Za-z0-9._~-]{1,128}$/

/** An allowed origin is exactly scheme://host[:port]: no path, no trailing slash, no wildcard. */
export function validOrigin (raw: string): string {
  let u: URL
  try { u = new URL(raw) } catch { throw new CliError(`--origin ${JSON.stringify(raw)} is not a URL`, 2) }
  if ((u.protocol !== 'https:' && u.protocol !== 'http:') || u.origin !== raw) {
    throw new CliError(`--origin must be an origin like https://app.example.com (no path or trailing slash), got ${JSON.stringify(raw)}`, 2)
  }
  return raw
}

const isDelivery = (raw: string): raw is Delivery => (DELIVERIES as readonly string[]).includes(raw)

export async function clientCommand (args: string[], io: Io): Promise<void> {
  const [action, rest] = subcommand(args, ['add', 'list'], USAGE)
  if (action === 'list') {
    parseCommand(rest, { usage: 'tokenline client list' })
    const clients = await withStore(io, async ({ store }) => await store.listClients())
    io.stdout.write(table([
      ['CLIENT_ID', 'TYPE', 'DELIVERY', 'GRANTS', 'SCOPES', 'ORIGINS', 'CREATED'],
      ...clients.map((c) => [c.id, c.secretDigest === null ? 'public' : 'confidential', c.delivery, c.grants.replace(' ', ','), c.scopes === '' ? '-' : c.scopes, c.origins === '' ? '-' : c.origins, iso(c.createdAt)])
    ]))
    return
  }
  const { values, positionals: { client_id: id } } = parseCommand(rest, {
    usage: ADD_USAGE,
    subcommand: true,
    positionals: ['client_id'],
    options: {
      confidential: { type: 'boolean', default: false },
      delivery: { type: 'string', default: 'body' },
      origin: { type: 'string', multiple: true, default: [] },
      grants: { type: 'string', default: 'password,refresh_token' },
      scopes: { type: 'string', default: '' }
    }
  })
  if (!CLIENT_ID.test(id)) throw new CliError('client_id must be 1 to 128 characters of A-Z a-z 0-9 . _ ~ -', 2)
  const delivery = values.delivery
  if (!isDelivery(delivery)) throw new CliError(`--delivery must be cookie, body or both, got ${JSON.stringify(delivery)}`, 2)
  const grants = values.grants.split(',').map((g) => g.trim()).filter((g) => g !== '')
  if (grants.length === 0 || !grants.every((g) => GRANTS.has(g))) throw new CliError(`--grants must be a comma-separated subset of password,refresh_token, got ${JSON.stringify(values.grants)}`, 2)
  const scopes = values.scopes.split(' ').filter((s) => s !== '')
  if (!scopes.every((s) => /^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/.test(s))) throw new CliError('--scopes must be space-separated scope tokens (RFC 6749 §3.3)', 2)
  const origins = values.origin.map(validOrigin)

  const secret = await withStore(io, async ({ store, opts }) => {
    if (await store.findClient(id) !== undefined) throw new CliError(`client ${id} already exists`)
    const secret = values.confidential ? 'tlcs_' + randomBytes(32).toString('base64url') : null
    await store.createClient({
      id,
      secretDigest: secret === null ? null : secretDigest(secret),
      delivery,
      grants: [...new Set(grants)].join(' '),
      scopes: [...new Set(scopes)].join(' '),
      origins: [...new Set(origins)].join(' '),
      accessTtl: null,
      idleTtl: null,
      sessionTtl: null,
      now: opts.now()
    })
    return secret
  })
  io.stdout.write(`created ${secret === null ? 'public' : 'confidential'} client ${id} (delivery ${delivery})\n`)
  if (secret !== null) io.stdout.write(`client_secret: ${secret}\n(shown once; only its digest is stored)\n`)
  if (delivery !== 'body' && origins.length === 0) {
    io.stderr.write('note: no --origin given, so browsers cannot use this client\'s cookie; only non-browser clients can\n')
  }
}
