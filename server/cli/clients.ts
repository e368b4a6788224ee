import { randomBytes } from 'node:crypto'
import type { Client, ClientChange, SecurityEvent } from '../../db/store.js'
import { secretDigest } from '../http/client-auth.js'
import { parseCommand, subcommand, withStore } from './command.js'
import { CliError, iso, plural, table, type Io } from './io.js'

const ADD_USAGE = 'tokenline client add <client_id> [--confidential] [--delivery cookie|body|both] [--origin <url>]... [--grants password,refresh_token] [--scopes "a b"]'
const UPDATE_USAGE = 'tokenline client update <client_id> [--delivery cookie|body|both] [--origin <url>]... [--grants password,refresh_token] [--scopes "a b"]'
const REMOVE_USAGE = 'tokenline client remove <client_id>'
const USAGE = `${ADD_USAGE} | client update <client_id> [options] | client remove <client_id> | client list`

const GRANTS = new Set(['password', 'refresh_token'])
const DELIVERIES = ['cookie', 'body', 'both'] as const
type Delivery = typeof DELIVERIES[number]
const CLIENT_ID = /^[A-Za-z0-9._~-]{1,128}$/
const VIA_CLI = { detail: { via: 'cli' } }

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

function validClientId (id: string): string {
  if (!CLIENT_ID.test(id)) throw new CliError('client_id must be 1 to 128 characters of A-Z a-z 0-9 . _ ~ -', 2)
  return id
}

/** The options `client add` and `client update` share, each validated the same way; the ones not given stay undefined. */
function clientFields (values: { delivery?: string, origin?: string[], grants?: string, scopes?: string }): ClientChange {
  const change: ClientChange = {}
  if (values.delivery !== undefined) {
    const delivery = values.delivery
    if (!isDelivery(delivery)) throw new CliError(`--delivery must be cookie, body or both, got ${JSON.stringify(delivery)}`, 2)
    change.delivery = delivery
  }
  if (values.grants !== undefined) {
    const grants = values.grants.split(',').map((g) => g.trim()).filter((g) => g !== '')
    if (grants.length === 0 || !grants.every((g) => GRANTS.has(g))) throw new CliError(`--grants must be a comma-separated subset of password,refresh_token, got ${JSON.stringify(values.grants)}`, 2)
    change.grants = [...new Set(grants)].join(' ')
  }
  if (values.scopes !== undefined) {
    const scopes = values.scopes.split(' ').filter((s) => s !== '')
    if (!scopes.every((s) => /^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/.test(s))) throw new CliError('--scopes must be space-separated scope tokens (RFC 6749 §3.3)', 2)
    change.scopes = [...new Set(scopes)].join(' ')
  }
  if (values.origin !== undefined) change.origins = [...new Set(values.origin.map(validOrigin))].join(' ')
  return change
}

const FIELD_OPTIONS = {
  delivery: { type: 'string' },
  origin: { type: 'string', multiple: true },
  grants: { type: 'string' },
  scopes: { type: 'string' }
} as const

/** What an operator should know about a client's delivery and origins, or undefined. */
function deliveryNote (c: Pick<Client, 'delivery' | 'origins'>): string | undefined {
  if (c.delivery !== 'body' && c.origins === '') return 'note: no --origin given, so browsers cannot use this client\'s cookie; only non-browser clients can'
  if (c.delivery !== 'cookie' && c.origins !== '') {
    return `note: delivery ${c.delivery} hands browsers a refresh token their JavaScript can read; --delivery cookie keeps it in an HttpOnly cookie`
  }
  return undefined
}

export async function clientCommand (args: string[], io: Io): Promise<void> {
  const [action, rest] = subcommand(args, ['add', 'update', 'remove', 'list'], USAGE)
  if (action === 'list') {
    parseCommand(rest, { usage: 'tokenline client list' })
    const clients = await withStore(io, async ({ store }) => await store.listClients())
    io.stdout.write(table([
      ['CLIENT_ID', 'TYPE', 'DELIVERY', 'GRANTS', 'SCOPES', 'ORIGINS', 'CREATED'],
      ...clients.map((c) => [c.id, c.secretDigest === null ? 'public' : 'confidential', c.delivery, c.grants.replace(' ', ','), c.scopes === '' ? '-' : c.scopes, c.origins === '' ? '-' : c.origins, iso(c.createdAt)])
    ]))
    return
  }
  if (action === 'update') { await updateClient(rest, io); return }
  if (action === 'remove') { await removeClient(rest, io); return }

  const { values, positionals: { client_id: id } } = parseCommand(rest, {
    usage: ADD_USAGE,
    subcommand: true,
    positionals: ['client_id'],
    options: { confidential: { type: 'boolean', default: false }, ...FIELD_OPTIONS }
  })
  validClientId(id)
  const fields = clientFields(values)
  const origins = fields.origins ?? ''
  // A browser client (one with an origin) must never get a refresh token its JavaScript can read, where
  // one injected script could take it away: the HttpOnly cookie is its default.
  const delivery = fields.delivery ?? (origins === '' ? 'body' : 'cookie')

  const secret = await withStore(io, async ({ store, opts }) => {
    if (await store.findClient(id) !== undefined) throw new CliError(`client ${id} already exists`)
    const secret = values.confidential ? 'tlcs_' + randomBytes(32).toString('base64url') : null
    await store.createClient({
      id,
      secretDigest: secret === null ? null : secretDigest(secret),
      delivery,
      grants: fields.grants ?? 'password refresh_token',
      scopes: fields.scopes ?? '',
      origins,
      accessTtl: null,
      idleTtl: null,
      sessionTtl: null,
      now: opts.now()
    })
    return secret
  })
  io.stdout.write(`created client ${id} (${secret === null ? 'public' : 'confidential'}, delivery ${delivery})\n`)
  if (secret !== null) io.stdout.write(`client_secret: ${secret}\n(shown once; only its digest is stored)\n`)
  const note = deliveryNote({ delivery, origins })
  if (note !== undefined) io.stderr.write(`${note}\n`)
}

const FIELDS = ['delivery', 'grants', 'scopes', 'origins'] as const
const shown = (v: string): string => (v === '' ? '-' : v)

/** `tokenline client update`: changes the fields given, nothing else, and prints each one that changed. */
async function updateClient (args: string[], io: Io): Promise<void> {
  const { values, positionals: { client_id: id } } = parseCommand(args, {
    usage: UPDATE_USAGE,
    subcommand: true,
    positionals: ['client_id'],
    options: FIELD_OPTIONS
  })
  validClientId(id)
  const change = clientFields(values)
  if (Object.keys(change).length === 0) throw new CliError(`nothing to change: give --delivery, --origin, --grants or --scopes (usage: ${UPDATE_USAGE})`, 2)
  const result = await withStore(io, async ({ store, opts }) => await store.updateClient({
    clientId: id,
    change,
    now: opts.now(),
    events: [{ type: 'client_updated', clientId: id, detail: { via: 'cli', ...change } }]
  }))
  if (result === undefined) throw new CliError(`no client ${id}`)
  const { before, after } = result
  const changed = FIELDS.filter((f) => before[f] !== after[f])
  if (changed.length === 0) {
    io.stdout.write(`client ${id} unchanged\n`)
  } else {
    io.stdout.write(`updated client ${id}\n`)
    for (const f of changed) io.stdout.write(`  ${f.padEnd(8)}  ${shown(before[f])} -> ${shown(after[f])}\n`)
  }
  const note = deliveryNote(after)
  if (note !== undefined) io.stderr.write(`${note}\n`)
}

/**
 * `tokenline client remove`: the client, and every live session of it revoked in the same transaction
 * (db/store.ts `removeClient` says why the row is deleted rather than marked).
 */
async function removeClient (args: string[], io: Io): Promise<void> {
  const { positionals: { client_id: id } } = parseCommand(args, { usage: REMOVE_USAGE, subcommand: true, positionals: ['client_id'] })
  validClientId(id)
  const n = await withStore(io, async ({ store, opts }) => {
    const events: SecurityEvent[] = [{ ...VIA_CLI, type: 'client_removed', clientId: id }]
    return await store.removeClient({ clientId: id, now: opts.now(), events, actor: VIA_CLI })
  })
  if (n === undefined) throw new CliError(`no client ${id}`)
  io.stdout.write(`removed client ${id}; revoked ${plural(n, 'session')}\n`)
}
