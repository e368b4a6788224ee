import { parseCommand, withStore } from './command.js'
import { CliError, iso, table, type Io } from './io.js'
import { formatDetail } from './lineage.js'
import { validUsername } from './users.js'

const USAGE = 'tokenline events [--user <username>] [--session <id>] [--limit <n>]'

/**
 * `tokenline events`: the audit trail, oldest first (the newest `--limit`, 200 by default). Events
 * never hold a token, password, secret or cookie; user agents are in `tokenline lineage`.
 */
export async function eventsCommand (args: string[], io: Io): Promise<void> {
  const { values } = parseCommand(args, { usage: USAGE, options: { user: { type: 'string' }, session: { type: 'string' }, limit: { type: 'string', default: '200' } } })
  if (!/^\d{1,7}$/.test(values.limit) || Number(values.limit) < 1) throw new CliError(`--limit must be a positive integer, got ${JSON.stringify(values.limit)}`, 2)
  if (values.user !== undefined && values.session !== undefined) throw new CliError(`give at most one of --user and --session (usage: ${USAGE})`, 2)
  const { names, events } = await withStore(io, async ({ store }) => {
    const names = new Map((await store.listUsers()).map((u) => [u.id, u.username]))
    let userId: string | undefined
    if (values.user !== undefined) {
      const username = validUsername(values.user)
      userId = [...names].find(([, n]) => n === username)?.[0]
      if (userId === undefined) throw new CliError(`no user ${username}`)
    }
    const events = await store.listEvents({
      ...(userId !== undefined && { userId }),
      ...(values.session !== undefined && { sessionId: values.session }),
      limit: Number(values.limit)
    })
    return { names, events: events.reverse() }
  })
  if (events.length === 0) { io.stdout.write('no events\n'); return }
  io.stdout.write(table([
    ['TIME', 'TYPE', 'USER', 'SESSION', 'CLIENT', 'IP', 'REASON', 'DETAIL'],
    ...events.map((e) => [
      iso(e.at), e.type, e.userId === null ? '-' : names.get(e.userId) ?? e.userId, e.sessionId ?? '-', e.clientId ?? '-',
      e.ip ?? '-', e.reason ?? '-', formatDetail(e.detail)
    ])
  ]))
}
