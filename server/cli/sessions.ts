import type { SecurityEvent, SessionView, Store } from '../../db/store.js'
import { sessionStatus } from '../sessions/state.js'
import { parseCommand, withStore } from './command.js'
import { CliError, iso, plural, table, type Io } from './io.js'
import { renderLineage, shortUa } from './lineage.js'
import { validUsername } from './users.js'

/** The reason recorded on sessions an operator ends with `tokenline revoke`. */
export const OPERATOR_REVOKED = 'operator_revoked'

/** Session ids are 22 base64url characters; anything else cannot name one. */
const SESSION_ID = /^[A-Za-z0-9_-]{1,64}$/

/** Who ended a session, in its security event: an operator at the CLI. */
const VIA_CLI = { detail: { via: 'cli' } }

async function userId (store: Store, raw: string): Promise<{ id: string, username: string }> {
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
  const { positionals } = parseCommand(args, { usage: 'tokenline sessions <username>', positionals: ['username'] })
  const { user, sessions, now } = await withStore(io, async ({ store, opts }) => {
    const user = await userId(store, positionals.username)
    return { user, sessions: await store.sessionsOfUser(user.id), now: opts.now() }
  })
  if (sessions.length === 0) { io.stdout.write(`no sessions for ${user.username}\n`); return }
  io.stdout.write(table([
    ['SESSION', 'CLIENT', 'CREATED', 'LAST_USED', 'EXPIRES', 'GEN', 'STATUS', 'BOUND_IP', 'DEVICE', 'LAST_IP', 'BOUND_UA'],
    ...sessions.map((s) => [
      s.id, s.clientId, iso(s.createdAt), iso(s.lastUsedAt), iso(s.expiresAt), String(s.generation), statusOf(s, now),
      s.ip ?? '-', s.deviceId ?? '-', s.lastIp ?? '-', shortUa(s.userAgent)
    ])
  ]))
}

/** `revoke --session`: the text to print. */
async function revokeSession (store: Store, id: string, now: number): Promise<string> {
  if (!SESSION_ID.test(id)) throw new CliError(`no session ${JSON.stringify(id)}`)
  const s = await store.findSession(id)
  if (s === undefined) throw new CliError(`no session ${id}`)
  const events: SecurityEvent[] = [{ ...VIA_CLI, type: 'session_revoked', userId: s.userId, sessionId: s.id, clientId: s.clientId, reason: OPERATOR_REVOKED }]
  if (!await store.revokeSession({ sessionId: s.id, reason: OPERATOR_REVOKED, now, events })) {
    return `session ${s.id} was already revoked (${s.revokedReason ?? '?'})`
  }
  return `revoked session ${s.id}`
}

/** `revoke --user`: the text to print. */
async function revokeUser (store: Store, username: string, now: number): Promise<string> {
  const user = await userId(store, username)
  const n = (await store.revokeUserSessions({ userId: user.id, reason: OPERATOR_REVOKED, now, actor: VIA_CLI })).length
  return `revoked ${plural(n, 'session')} of ${user.username}`
}

/**
 * `tokenline revoke --session <id> | --user <username>`. The same immediate transaction as rotation
 * (db/sqlite/store.ts), so a refresh racing it either commits first — and its new token dies with the
 * session — or finds the session already revoked.
 */
export async function revokeCommand (args: string[], io: Io): Promise<void> {
  const usage = 'tokenline revoke --session <id> | --user <username>'
  const { values: { session, user } } = parseCommand(args, { usage, options: { session: { type: 'string' }, user: { type: 'string' } } })
  if ((session === undefined) === (user === undefined)) throw new CliError(`give exactly one of --session or --user (usage: ${usage})`, 2)
  const said = await withStore(io, async ({ store, opts }) => session !== undefined
    ? await revokeSession(store, session, opts.now())
    : await revokeUser(store, user as string, opts.now()))
  io.stdout.write(said + '\n')
}

/** `tokenline lineage <session_id>`: the session's token chain with its security events. */
export async function lineageCommand (args: string[], io: Io): Promise<void> {
  const { positionals: { session_id: id } } = parseCommand(args, { usage: 'tokenline lineage <session_id>', positionals: ['session_id'] })
  const lineage = await withStore(io, async ({ store, opts }) => {
    const session = SESSION_ID.test(id) ? await store.findSession(id) : undefined
    if (session === undefined) throw new CliError(`no session ${JSON.stringify(id)} (expired sessions are pruned with their lineage)`)
    return renderLineage({
      session,
      user: await store.findUserById(session.userId),
      tokens: await store.lineage(session.id),
      events: await store.listEvents({ sessionId: session.id, limit: 10_000 }),
      now: opts.now()
    })
  })
  io.stdout.write(lineage)
}
