import { rotateKeys } from '../tokens/key-rotation.js'
import { CliError, iso, openStore, table, type Io } from './io.js'

const USAGE = 'usage: tokenline keys rotate [--drop-old] | keys list'

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
  const [sub, ...rest] = args
  if (sub !== 'rotate' && sub !== 'list') throw new CliError(USAGE, 2)
  const dropOld = sub === 'rotate' && rest[0] === '--drop-old'
  const extra = rest.slice(dropOld ? 1 : 0)
  if (extra.length > 0) throw new CliError(`unexpected argument ${JSON.stringify(extra[0])} (${USAGE})`, 2)
  const { store, opts } = openStore(io)
  try {
    const now = opts.now()
    if (sub === 'rotate') {
      const r = await rotateKeys(store, opts, now, { dropOld })
      io.stdout.write(`new signing key ${r.key.kid} (${r.key.alg})\n`)
      for (const k of r.retired) {
        io.stdout.write(dropOld
          ? `retired ${k.kid} (${k.alg}): removed from the JWKS now; tokens it signed no longer verify\n`
          : `retired ${k.kid} (${k.alg}): stays in the JWKS until ${iso(r.retiredUntil)}\n`)
      }
      return
    }
    const keys = await store.listKeys()
    const state = (k: { retiredAt: number | null, expiresAt: number | null }): string =>
      k.retiredAt === null ? 'signing' : k.expiresAt !== null && k.expiresAt <= now ? 'expired' : 'retired'
    io.stdout.write(table([
      ['KID', 'ALG', 'STATE', 'CREATED', 'RETIRED', 'PUBLISHED UNTIL'],
      ...keys.map((k) => [k.kid, k.alg, state(k), iso(k.createdAt), iso(k.retiredAt), k.retiredAt === null ? '-' : iso(k.expiresAt)])
    ]))
  } finally {
    store.close()
  }
}
