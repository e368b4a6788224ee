import { parseArgs } from 'node:util'
import type { SecurityEvent, SessionView, Store } from '../../db/store.js'
import { sessionStatus } from '../sessions/state.js'
import { CliError, iso, openStore, table, type Io } from './io.js'
import { renderLineage, shortUa } from './lineage.js'
import { validUsername } from './users.js'

/** The reason recorded on sessions an operator ends with `tokenline revoke`. */
export const OPERATOR_REVOKED = 'operator_revoked'

/** Session ids are 22 base64url characters; anything else cannot name one. */
const SESSION_ID = /^[A-Za-z0-9_-]{1,64}$/

type Options = NonNullable<NonNullable<Parameters<typeof parseArgs>[0]>['options']>

function parse (args: string[], options: Options, usage: string): { values: Record<string, string | boolean | Array<string | boolean> | undefined>, positionals: string[] } {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true })
  } catch (err) {
    throw new CliError(`${(err as Error).message.split('\n')[0] ?? 'bad arguments'} (usage: ${usage})`, 2)
  }
}

async function userId (store: Store, raw: string | undefined): Promise<{ id: string, username: string }> {
  const username = validUsername(raw)
  const user = await store.findUserByUsername(username)
  if (user === undefined) throw new CliError(`no user ${username}`)
  return { id: user.id, username }
}

function statusOf (s: SessionView, now: number): string {
  const st = sessionStatus(s, now)
  return st === 'revoked' ? `revoked (${s.revokedReason ?? '?'})` : st
}

/** `tokenline sessions <username>`: every stored session of the user, newest first. */
export async function sessionsCommand (args: string[], io: Io): Promise<void> {
  const usage = 'tokenline sessions <username>'
  if (args.length !== 1) throw new CliError(`usage: ${usage}`, 2)
  const { store, opts } = openStore(io)
  try {
    const user = await userId(store, args[0])
    const sessions = await store.sessionsOfUser(user.id)
    if (sessions.length === 0) { io.stdout.write(`no sessions for ${user.username}\n`); return }
    const now = opts.now()
    io.stdout.write(table([
      ['SESSION', 'CLIENT', 'CREATED', 'LAST_USED', 'EXPIRES', 'GEN', 'STATUS', 'BOUND_IP', 'DEVICE', 'LAST_IP', 'BOUND_UA'],
      ...sessions.map((s) => [
        s.id, s.clientId, iso(s.createdAt), iso(s.lastUsedAt), iso(s.expiresAt), String(s.generation), statusOf(s, now),
        s.ip ?? '-', s.deviceId ?? '-', s.lastIp ?? '-', shortUa(s.userAgent)
      ])
    ]))
  } finally {
    store.close()
  }
}

/**
 * `tokenline revoke --session <id> | --user <username>`. The same immediate transaction as rotation
 * (db/sqlite/store.ts), so a refresh racing it either commits first — and its new token dies with the
 * session — or finds the session already revoked.
 */
export async function revokeCommand (args: string[], io: Io): Promise<void> {
  const usage = 'tokenline revoke --session <id> | --user <username>'
  const { values, positionals } = parse(args, { session: { type: 'string' }, user: { type: 'string' } }, usage)
  if (positionals.length > 0) throw new CliError(`unexpected argument ${JSON.stringify(positionals[0])} (usage: ${usage})`, 2)
  const sessionId = values.session as string | undefined
  const username = values.user as string | undefined
  if ((sessionId === undefined) === (username === undefined)) throw new CliError(`give exactly one of --session or --user (usage: ${usage})`, 2)
  const { store, opts } = openStore(io)
  try {
    const now = opts.now()
    const who = { detail: { via: 'cli' } }
    if (sessionId !== undefined) {
      if (!SESSION_ID.test(sessionId)) throw new CliError(`no session ${JSON.stringify(sessionId)}`)
      const s = await store.findSession(sessionId)
      if (s === undefined) throw new CliError(`no session ${sessionId}`)
      const events: SecurityEvent[] = [{ ...who, type: 'session_revoked', userId: s.userId, sessionId: s.id, clientId: s.clientId, reason: OPERATOR_REVOKED }]
      if (!await store.revokeSession({ sessionId: s.id, reason: OPERATOR_REVOKED, now, events })) {
        io.stdout.write(`session ${s.id} was already revoked (${s.revokedReason ?? '?'})\n`)
        return
      }
      io.stdout.write(`revoked session ${s.id}\n`)
      return
    }
    const user = await userId(store, username)
    const n = (await store.revokeUserSessions({ userId: user.id, reason: OPERATOR_REVOKED, now, actor: who })).length
    io.stdout.write(`revoked ${n} session${n === 1 ? '' : 's'} of ${user.username}\n`)
  } finally {
    store.close()
  }
}

/** `tokenline lineage <session_id>`: the session's token chain with its security events. */
export async function lineageCommand (args: string[], io: Io): Promise<void> {
  const id = args[0]
  if (args.length !== 1 || id === undefined) throw new CliError('usage: tokenline lineage <session_id>', 2)
  const { store, opts } = openStore(io)
  try {
    const session = SESSION_ID.test(id) ? await store.findSession(id) : undefined
    if (session === undefined) throw new CliError(`no session ${JSON.stringify(id)} (expired sessions are pruned with their lineage)`)
    io.stdout.write(renderLineage({
      session,
      user: await store.findUserById(session.userId),
      tokens: await store.lineage(session.id),
      events: await store.listEvents({ sessionId: session.id, limit: 10_000 }),
      now: opts.now()
    }))
  } finally {
    store.close()
  }
}
