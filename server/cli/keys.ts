import { rotateKeys } from '../tokens/key-rotation.js'
import { parseCommand, subcommand, withStore } from './command.js'
import { iso, table, type Io } from './io.js'

const USAGE = 'tokenline keys rotate [--drop-old] | keys list'

/**
 * `tokenline keys rotate`: a new signing key of the configured algorithm (TOKENLINE_ALG) signs from now
 * on; running servers pick it up within seconds, without a restart. The retired key stays in the JWKS
 * until every token it signed has expired. Private keys never leave the database: nothing here prints one.
 *
 * `--drop-old` is for a key that may have leaked: it leaves the JWKS at once instead.
 *
 * `tokenline keys list`: every stored key and its state.
 */
export async function keysCommand (args: string[], io: Io): Promise<void> {
  const [action, rest] = subcommand(args, ['rotate', 'list'], USAGE)
  if (action === 'rotate') {
    const { values: { 'drop-old': dropOld } } = parseCommand(rest, { usage: 'tokenline keys rotate [--drop-old]', options: { 'drop-old': { type: 'boolean', default: false } } })
    const rotated = await withStore(io, async ({ store, opts }) => await rotateKeys(store, opts, opts.now(), { dropOld }))
    io.stdout.write(`new signing key ${rotated.key.kid} (${rotated.key.alg})\n`)
    for (const k of rotated.retired) {
      io.stdout.write(dropOld
        ? `retired ${k.kid} (${k.alg}): removed from the JWKS now; tokens it signed no longer verify\n`
        : `retired ${k.kid} (${k.alg}): stays in the JWKS until ${iso(rotated.retiredUntil)}\n`)
    }
    return
  }
  parseCommand(rest, { usage: 'tokenline keys list' })
  const { keys, now } = await withStore(io, async ({ store, opts }) => ({ keys: await store.listKeys(), now: opts.now() }))
  const state = (k: { retiredAt: number | null, expiresAt: number | null }): string =>
    k.retiredAt === null ? 'signing' : k.expiresAt !== null && k.expiresAt <= now ? 'expired' : 'retired'
  io.stdout.write(table([
    ['KID', 'ALG', 'STATE', 'CREATED', 'RETIRED', 'PUBLISHED UNTIL'],
    ...keys.map((k) => [k.kid, k.alg, state(k), iso(k.createdAt), iso(k.retiredAt), k.retiredAt === null ? '-' : iso(k.expiresAt)])
  ]))
}
