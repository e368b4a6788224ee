// `npm run bench`: side-by-side throughput of Tokenline's grants against a bare Fastify baseline, with
// one load generator (autocannon, in this process), real servers on loopback, and the raw primitives
// that explain the figures. Goals are ratios measured in one run on one box: absolute numbers from
// other machines, or from this one when it is busy, are only anchors.
//
//   H         bare Fastify 5 `GET /` -> {"hello":"world"} (bench/hello-server.js), own process
//   refresh   POST /token grant_type=refresh_token on `node dist/server/standalone/main.js`; every connection
//             chains its own session: each request presents the token the previous response returned
//   password  POST /token grant_type=password (argon2id m=19456,t=2,p=1), fewer connections
//   peer      the same chained refresh against @node-oauth/oauth2-server in Fastify with a better-sqlite3
//             model (bench/peer-server.js): the library most Node projects would use instead
//   S/T/A     sign ops/s, rotation transactions/s, argon2 verify latency (bench/primitives.js)
//   pg        the refresh grant with TOKENLINE_DB on PostgreSQL: one instance, then two instances sharing
//             the database, the load split between them (a throwaway cluster from bench/pg-cluster.js,
//             or the server BENCH_PG_URL names: a user that may CREATE DATABASE)
//
// Environment: BENCH_DURATION (s, default 10), BENCH_WARMUP (s, 3), BENCH_CONNECTIONS (64),
// BENCH_PASSWORD_CONNECTIONS (2 per server CPU), BENCH_SESSIONS (n: also measure the refresh with n stored
// sessions of other users, three tokens each), BENCH_PIN=0 (no taskset), BENCH_SERVER_CPU (0), BENCH_LOADER_CPU (1),
// BENCH_ONLY=h,refresh,password,peer,pg,primitives (subset), BENCH_PROFILE=<dir> (write a V8 CPU profile of
// the Tokenline server during the refresh run; see bench/profile-summary.js).
import autocannon from 'autocannon'
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createHash, randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'
import { openDatabase } from '../dist/db/sqlite/database.js'
import { createStore } from '../dist/db/sqlite/store.js'
import { openStore } from '../dist/db/open.js'
import { startCluster } from './pg-cluster.js'
import { createPasswords } from '../dist/server/security/passwords.js'
import { randomId } from '../dist/server/tokens/refresh-format.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const int = (name, dflt) => {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return dflt
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 0) fail(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`)
  return n
}

const DURATION = int('BENCH_DURATION', 10)
const WARMUP = int('BENCH_WARMUP', 3)
const CONNECTIONS = int('BENCH_CONNECTIONS', 64)
const SERVER_CPU = int('BENCH_SERVER_CPU', 0)
const LOADER_CPU = int('BENCH_LOADER_CPU', 1)
// Stored sessions (of other users, three tokens each) seeded before a second refresh run.
const SEEDED = int('BENCH_SESSIONS', 0)
const PROFILE_DIR = process.env.BENCH_PROFILE || undefined
const ONLY = new Set((process.env.BENCH_ONLY ?? 'h,refresh,password,peer,pg,primitives').split(',').map((s) => s.trim()))
// The production parameters (server/options.ts defaults), set explicitly on the server too.
const ARGON2 = { memoryCost: 19456, timeCost: 2, parallelism: 1 }
const USER_AGENT = 'tokenline-bench/1'
const USERNAME = 'bench'
const PASSWORD = 'bench password, long enough'
const CLIENT_ID = 'bench'
const TOKEN_IN_BODY = /"refresh_token":"(tlrt_[A-Za-z0-9_-]{49})"/
const PEER_TOKEN_IN_BODY = /"refresh_token":"([0-9a-f]{64})"/

function fail (message) {
  process.stderr.write(`bench: ${message}\n`)
  process.exitCode = 1
  throw new BenchError(message)
}
class BenchError extends Error {}

// ---------------------------------------------------------------------------------------------
// Child processes: every server is tracked and killed however this process ends.
const children = new Set()
const tempDirs = new Set()
function killChildren () {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
}
process.on('exit', () => {
  killChildren()
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true })
})
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => { killChildren(); process.exit(130) })
}

// ---------------------------------------------------------------------------------------------
// CPU pinning: server (and primitives) on one core, autocannon on another, so
// the baseline and the subjects see the same split.
function hasTaskset () {
  const r = spawnSync('taskset', ['-V'], { stdio: 'ignore' })
  return r.error === undefined && r.status === 0
}
// Counted before pinning: afterwards this process itself only sees the loader's core.
const CPUS = availableParallelism()
const pin = process.env.BENCH_PIN !== '0' && CPUS >= 2 && hasTaskset()
let pinned = false
if (pin) {
  // -a: every thread of this process (autocannon runs on the main thread; libuv's pool follows).
  const r = spawnSync('taskset', ['-a', '-p', '-c', String(LOADER_CPU), String(process.pid)], { stdio: 'ignore' })
  pinned = r.status === 0
}
// The server's argon2 gate admits one hash per CPU it can run on, plus two waiters per slot, and
// refuses the rest with 503 (server/argon2-gate.ts). One running and one waiting per slot keeps
// argon2 saturated without shedding, so the password run measures the grant, not the refusals.
const SERVER_CPUS = pinned ? 1 : CPUS
const PASSWORD_CONNECTIONS = int('BENCH_PASSWORD_CONNECTIONS', 2 * SERVER_CPUS)
const pinPrefix = (argv) => (pinned ? ['taskset', '-c', String(SERVER_CPU), ...argv] : argv)

function launch (name, argv, env) {
  const [cmd, ...args] = pinPrefix(argv)
  const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  child.stderrText = ''
  child.stderr.on('data', (d) => { child.stderrText = (child.stderrText + d).slice(-4000) })
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => { children.delete(child); resolve({ code, signal }) }))
  child.benchName = name
  return child
}

async function stop (child) {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await child.exited
  clearTimeout(timer)
}

/** Resolves with the child's first stdout line, or rejects when it exits or times out first. */
function firstLine (child, timeoutMs = 20_000) {
  return new Promise((resolve, reject) => {
    let buf = ''
    const timer = setTimeout(() => reject(new BenchError(`${child.benchName} did not start within ${timeoutMs} ms\n${child.stderrText}`)), timeoutMs)
    child.stdout.on('data', (d) => {
      buf += d
      const nl = buf.indexOf('\n')
      if (nl !== -1) { clearTimeout(timer); resolve(buf.slice(0, nl)) }
    })
    child.exited.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new BenchError(`${child.benchName} exited (${signal ?? code}) before it was ready\n${child.stderrText}`))
    })
  })
}

async function freePort () {
  const srv = createServer()
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const { port } = srv.address()
  await new Promise((resolve) => srv.close(resolve))
  return port
}

/** Polls until the server answers HTTP at all; fails loudly if it exits or never answers. */
async function waitForHttp (child, url, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs
  let exited
  child.exited.then((e) => { exited = e })
  while (Date.now() < deadline) {
    if (exited !== undefined) throw new BenchError(`${child.benchName} exited (${exited.signal ?? exited.code}) before it was ready\n${child.stderrText}`)
    try {
      const res = await fetch(url)
      await res.arrayBuffer()
      return
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  throw new BenchError(`${child.benchName} did not answer ${url} within ${timeoutMs} ms\n${child.stderrText}`)
}

// ---------------------------------------------------------------------------------------------
// Load generation.
async function cannon (opts) {
  const result = await autocannon({ pipelining: 1, ...opts })
  return {
    requests_per_s: result.requests.average,
    latency_ms: { p50: result.latency.p50, p99: result.latency.p99, p99_9: result.latency.p99_9, max: result.latency.max, mean: result.latency.mean },
    total: result.requests.total,
    ok_2xx: result['2xx'],
    non_2xx: result.non2xx,
    status_codes: Object.fromEntries(Object.entries(result.statusCodeStats).map(([k, v]) => [k, v.count])),
    errors: result.errors,
    timeouts: result.timeouts,
    connections: opts.connections,
    duration_s: result.duration
  }
}

/** A warm-up run (discarded), then the measured run. */
async function measure (label, server, makeOpts) {
  const rssBefore = rssMiB(server.pid)
  if (WARMUP > 0) {
    process.stdout.write(`  ${label}: warm-up ${WARMUP} s\n`)
    await cannon(makeOpts('warmup', WARMUP))
  }
  process.stdout.write(`  ${label}: measuring ${DURATION} s\n`)
  const before = cpuTicks(server.pid)
  const r = await cannon(makeOpts('measure', DURATION))
  const after = cpuTicks(server.pid)
  // The server's own CPU time per completed request (main thread and libuv pool together): less
  // sensitive to other load on the box than requests/s.
  r.server_cpu_us_per_request = before === undefined || after === undefined || r.total === 0
    ? undefined
    : ((after - before) * 1e6) / CLK_TCK / r.total
  r.rss_mib = { before: rssBefore, after: rssMiB(server.pid) }
  return r
}

/** Resident set size of a process in MiB, from /proc (Linux); undefined elsewhere. */
function rssMiB (pid) {
  try {
    const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    return kb === undefined ? undefined : Number(kb) / 1024
  } catch {
    return undefined
  }
}

/** utime + stime of a process in clock ticks, from /proc (Linux); undefined elsewhere. */
function cpuTicks (pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return Number(fields[11]) + Number(fields[12])
  } catch {
    return undefined
  }
}
/** CPU ticks of every PostgreSQL server process on this machine (postmaster, backends, background workers), per pid. */
function postgresTicks () {
  const ticks = new Map()
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      if (!cmd.startsWith('postgres') && !cmd.includes('/bin/postgres')) continue
      const t = cpuTicks(pid)
      if (t !== undefined) ticks.set(pid, t)
    } catch {}
  }
  return ticks
}

/** PostgreSQL's CPU ticks between two postgresTicks() readings (a backend started in between counts from zero). */
const postgresDelta = (before, after) => [...after].reduce((a, [pid, t]) => a + t - (before.get(pid) ?? 0), 0)

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100

const form = (o) => new URLSearchParams(o).toString()
const FORM_HEADERS = { 'content-type': 'application/x-www-form-urlencoded', 'user-agent': USER_AGENT }

/**
 * Options for a chained refresh run. Each connection takes one pre-provisioned session and, on every
 * response, swaps its request body for the successor token it was just given. The token lives on the
 * client, not in autocannon's `context` (autocannon resets it whenever the request list loops).
 */
function chainedRefresh (url, pool, connections, duration, stats, tokenInBody = TOKEN_IN_BODY) {
  if (pool.length < connections) throw new BenchError(`need ${connections} sessions, have ${pool.length}`)
  const body = (token) => form({ grant_type: 'refresh_token', client_id: CLIENT_ID, refresh_token: token })
  let next = 0
  return {
    url,
    method: 'POST',
    headers: FORM_HEADERS,
    body: body(pool[0]),
    connections,
    duration,
    setupClient (client) {
      const slot = next++
      client.setBody(body(pool[slot]))
      let text = ''
      // With -p 1 a connection has one response in flight; 'body' hands over raw socket chunks.
      client.on('headers', () => { text = '' })
      client.on('body', (chunk) => {
        text += chunk.toString('latin1')
        const m = tokenInBody.exec(text)
        if (m === null) return
        text = ''
        // Within the grace window a re-presented parent is answered 200 with the successor it already
        // got (a replay, not a rotation), so a broken chain could look healthy: count repeats.
        if (m[1] === pool[slot]) stats.repeated++
        pool[slot] = m[1]
        stats.chained++
        client.setBody(body(m[1]))
      })
    }
  }
}

/**
 * Logs in once per session with the password grant (before any measured run), as many at a time as
 * the argon2 gate runs, retrying when it sheds a login (503 + Retry-After) on a busy box.
 */
async function provisionSessions (base, n) {
  const tokens = []
  let i = 0
  const login = async () => {
    for (let attempt = 1; ; attempt++) {
      const res = await fetch(`${base}/token`, {
        method: 'POST',
        headers: FORM_HEADERS,
        body: form({ grant_type: 'password', client_id: CLIENT_ID, username: USERNAME, password: PASSWORD })
      })
      const json = await res.json()
      if (res.status === 200 && typeof json.refresh_token === 'string') return json.refresh_token
      if (res.status !== 503 || attempt === 10) throw new BenchError(`login for provisioning failed: ${res.status} ${JSON.stringify(json)}`)
      await new Promise((resolve) => setTimeout(resolve, 1000 * Number(res.headers.get('retry-after') ?? 1)))
    }
  }
  const worker = async () => {
    while (i < n) {
      i++
      tokens.push(await login())
    }
  }
  await Promise.all(Array.from({ length: SERVER_CPUS }, worker))
  return tokens
}

// ---------------------------------------------------------------------------------------------
// Subjects.
const baseEnv = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TOKENLINE_') && !k.startsWith('BENCH_')))

async function benchHello () {
  const child = launch('hello-world server', [process.execPath, 'bench/hello-server.js'], baseEnv())
  try {
    const { port } = JSON.parse(await firstLine(child))
    const url = `http://127.0.0.1:${port}/`
    return await measure('H (hello world)', child, (_phase, duration) => ({ url, connections: CONNECTIONS, duration }))
  } finally {
    await stop(child)
  }
}

/** The peer library on the same refresh load: its own process, pinned like Tokenline's server. */
async function benchPeer (dir) {
  const sessions = CONNECTIONS * (WARMUP > 0 ? 2 : 1)
  const child = launch('peer server', [process.execPath, 'bench/peer-server.js'], { ...baseEnv(), PEER_DB: join(dir, 'peer.db'), PEER_SESSIONS: String(sessions) })
  try {
    const { port, tokens } = JSON.parse(await firstLine(child, 60_000))
    const pools = { warmup: tokens.slice(CONNECTIONS), measure: tokens.slice(0, CONNECTIONS) }
    const stats = { warmup: { chained: 0, repeated: 0 }, measure: { chained: 0, repeated: 0 } }
    const r = await measure('peer: @node-oauth/oauth2-server refresh', child, (phase, duration) =>
      chainedRefresh(`http://127.0.0.1:${port}/token`, pools[phase], CONNECTIONS, duration, stats[phase], PEER_TOKEN_IN_BODY))
    r.chained_responses = stats.measure.chained
    r.repeated_tokens = stats.warmup.repeated + stats.measure.repeated
    return r
  } finally {
    await stop(child)
  }
}

async function provisionDatabase (file) {
  const store = await openStore(file, { pgPoolSize: 2, pgStatementTimeoutMs: 10_000 })
  try {
    const now = Date.now()
    await store.createUser({ id: randomId(), username: USERNAME, passwordHash: await createPasswords(ARGON2).hash(PASSWORD), now })
    await store.createClient({ id: CLIENT_ID, secretDigest: null, delivery: 'body', grants: 'password refresh_token', scopes: 'read write', origins: '', accessTtl: null, idleTtl: null, sessionTtl: null, now })
  } finally {
    await store.close()
  }
}

/**
 * Fills the database with `n` sessions of 1,000 users each (not the bench user's), each with a consumed
 * login token, a consumed first child and a live second one, as a long-running deployment has them.
 * Written straight through SQL in large transactions: the store's one-at-a-time API would take hours.
 */
function seedSessions (file, n) {
  const store = createStore(openDatabase(file))
  store.close()
  const db = new Database(file)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = OFF')
  const now = Date.now()
  const user = db.prepare("INSERT INTO users (id, username, password_hash, created_at, updated_at) VALUES (?, ?, 'seeded', ?, ?)")
  const session = db.prepare(`INSERT INTO sessions (id, user_id, client_id, scope, generation, user_agent, ip, device_id, created_at, last_used_at, idle_expires_at, expires_at)
    VALUES (?, ?, ?, 'read write', 2, 'seeded/1', '10.0.0.1', NULL, ?, ?, ?, ?)`)
  const token = db.prepare(`INSERT INTO refresh_tokens (digest, session_id, generation, parent_generation, issued_at, issued_ip, issued_user_agent, used_at, used_ip, used_user_agent)
    VALUES (?, ?, ?, ?, ?, '10.0.0.1', 'seeded/1', ?, ?, ?)`)
  const digest = () => createHash('sha256').update(randomBytes(32)).digest()
  const batch = db.transaction((from, to) => {
    for (let i = from; i < to; i++) {
      const userId = `seed-user-${Math.floor(i / 1000)}`
      if (i % 1000 === 0) user.run(userId, userId, now, now)
      const sid = randomId()
      session.run(sid, userId, CLIENT_ID, now, now, now + 86400e3, now + 30 * 86400e3)
      for (let g = 0; g < 3; g++) {
        const used = g < 2 ? now : null
        token.run(digest(), sid, g, g === 0 ? null : g - 1, now, used, used === null ? null : '10.0.0.1', used === null ? null : 'seeded/1')
      }
    }
  })
  for (let i = 0; i < n; i += 10_000) {
    batch(i, Math.min(n, i + 10_000))
    if (i % 100_000 === 0) process.stdout.write(`  seeding: ${i.toLocaleString('en-US')} / ${n.toLocaleString('en-US')} sessions\n`)
  }
  db.pragma('wal_checkpoint(TRUNCATE)')
  db.close()
}

async function benchTokenline (dir, seeded = 0) {
  const dbFile = join(dir, seeded > 0 ? 'seeded.db' : 'tokenline.db')
  await provisionDatabase(dbFile)
  if (seeded > 0) seedSessions(dbFile, seeded)
  const port = await freePort()
  const env = tokenlineEnv(port, dbFile)
  const nodeArgs = PROFILE_DIR !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`] : []
  const child = launch('tokenline server', [process.execPath, ...nodeArgs, 'dist/server/standalone/main.js'], env)
  const base = `http://127.0.0.1:${port}`
  const out = {}
  try {
    await waitForHttp(child, `${base}/.well-known/oauth-authorization-server`)
    out.rss_idle_mib = rssMiB(child.pid)
    if (ONLY.has('refresh')) {
      // Separate session pools for warm-up and measurement: a request in flight when a run stops has
      // rotated a token whose successor nobody read, so a pool is never reused across runs.
      process.stdout.write(`  refresh: logging in ${CONNECTIONS * (WARMUP > 0 ? 2 : 1)} sessions\n`)
      const pools = { warmup: WARMUP > 0 ? await provisionSessions(base, CONNECTIONS) : [], measure: await provisionSessions(base, CONNECTIONS) }
      const stats = { warmup: { chained: 0, repeated: 0 }, measure: { chained: 0, repeated: 0 } }
      const label = seeded > 0 ? `refresh grant, ${seeded.toLocaleString('en-US')} stored sessions` : 'refresh grant'
      const r = await measure(label, child, (phase, duration) => chainedRefresh(`${base}/token`, pools[phase], CONNECTIONS, duration, stats[phase]))
      r.chained_responses = stats.measure.chained
      r.repeated_tokens = stats.warmup.repeated + stats.measure.repeated
      out.refresh = r
    }
    if (ONLY.has('password') && PROFILE_DIR === undefined && seeded === 0) {
      out.password = await measure('password grant', child, (_phase, duration) => ({
        url: `${base}/token`,
        method: 'POST',
        headers: FORM_HEADERS,
        body: form({ grant_type: 'password', client_id: CLIENT_ID, username: USERNAME, password: PASSWORD }),
        connections: PASSWORD_CONNECTIONS,
        duration
      }))
      // argon2's 19 MiB per verify is given back after the storm: how much of it is, 5 s later.
      await new Promise((resolve) => setTimeout(resolve, 5000))
      out.password.rss_mib.settled = rssMiB(child.pid)
    }
  } finally {
    await stop(child)
  }
  if (out.refresh !== undefined) {
    out.refresh.server_events = await countEvents(dbFile)
    out.refresh.db_bytes = statSync(dbFile).size
  }
  return out
}

/** The server's own record of what happened: every refresh must have been a rotation. */
async function countEvents (database) {
  const store = await openStore(database, { pgPoolSize: 2, pgStatementTimeoutMs: 60_000 })
  try {
    const counts = {}
    for (const e of await store.listEvents({ limit: Number.MAX_SAFE_INTEGER })) counts[e.type] = (counts[e.type] ?? 0) + 1
    return counts
  } finally {
    await store.close()
  }
}

/** The env of a Tokenline server under the refresh load. */
const tokenlineEnv = (port, database) => ({
  ...baseEnv(),
  PORT: String(port),
  HOST: '127.0.0.1',
  TOKENLINE_DB: database,
  TOKENLINE_LOG_LEVEL: 'silent',
  TOKENLINE_ACCESS_TTL: '3600',
  // All load comes from one address: the per-IP password budget (20/min by default) would measure
  // the limiter. Refreshes that succeed never spend the failure budget, which stays on.
  TOKENLINE_THROTTLE_PASSWORD: '0',
  TOKENLINE_ARGON2_MEMORY: String(ARGON2.memoryCost),
  TOKENLINE_ARGON2_TIME: String(ARGON2.timeCost),
  TOKENLINE_ARGON2_PARALLELISM: String(ARGON2.parallelism)
})

/**
 * The refresh grant on PostgreSQL: one instance with every connection, then two instances on the same
 * database with half the connections each (two load generators in this process, run at once), as a
 * load balancer would split them. CPU per refresh counts both Tokenline processes, not PostgreSQL's.
 */
async function benchPostgres () {
  let cluster
  let admin = process.env.BENCH_PG_URL
  if (admin === undefined || admin === '') {
    cluster = startCluster(await freePort())
    if (cluster === undefined) {
      process.stdout.write('  pg: skipped (no PostgreSQL: install postgresql, or set BENCH_PG_URL)\n')
      return undefined
    }
    admin = cluster.url
  }
  const { default: pg } = await import('pg')
  const databases = []
  const makeDatabase = async () => {
    const name = `tokenline_bench_${randomBytes(4).toString('hex')}`
    const c = new pg.Client({ connectionString: admin })
    await c.connect()
    await c.query(`CREATE DATABASE ${name}`)
    await c.end()
    databases.push(name)
    const u = new URL(admin)
    u.pathname = `/${name}`
    return u.toString()
  }
  const out = {}
  try {
    for (const instances of [1, 2]) {
      const database = await makeDatabase()
      await provisionDatabase(database)
      const servers = []
      try {
        for (let i = 0; i < instances; i++) {
          const port = await freePort()
          const nodeArgs = PROFILE_DIR !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${join(PROFILE_DIR, `pg-${instances}-${i + 1}`)}`] : []
          const child = launch(`tokenline on PostgreSQL #${i + 1}`, [process.execPath, ...nodeArgs, 'dist/server/standalone/main.js'], tokenlineEnv(port, database))
          servers.push({ child, base: `http://127.0.0.1:${port}` })
        }
        for (const s of servers) await waitForHttp(s.child, `${s.base}/.well-known/oauth-authorization-server`)
        const per = CONNECTIONS / instances
        process.stdout.write(`  pg, ${instances} instance(s): logging in ${CONNECTIONS * (WARMUP > 0 ? 2 : 1)} sessions\n`)
        const pools = await Promise.all(servers.map(async (s) => ({ warmup: WARMUP > 0 ? await provisionSessions(s.base, per) : [], measure: await provisionSessions(s.base, per) })))
        const stats = servers.map(() => ({ warmup: { chained: 0, repeated: 0 }, measure: { chained: 0, repeated: 0 } }))
        const run = async (phase, duration) => await Promise.all(servers.map(async (s, i) => await cannon(chainedRefresh(`${s.base}/token`, pools[i][phase], per, duration, stats[i][phase]))))
        if (WARMUP > 0) {
          process.stdout.write(`  pg, ${instances} instance(s): warm-up ${WARMUP} s\n`)
          await run('warmup', WARMUP)
        }
        process.stdout.write(`  pg, ${instances} instance(s): measuring ${DURATION} s\n`)
        const before = servers.map((s) => cpuTicks(s.child.pid))
        const pgBefore = postgresTicks()
        const parts = await run('measure', DURATION)
        const pgAfter = postgresTicks()
        const after = servers.map((s) => cpuTicks(s.child.pid))
        const sum = (f) => parts.reduce((a, x) => a + f(x), 0)
        const r = {
          instances,
          requests_per_s: sum((x) => x.requests_per_s),
          // The slower half's percentiles: what a client of either instance sees at worst.
          latency_ms: { mean: sum((x) => x.latency_ms.mean * x.total) / Math.max(1, sum((x) => x.total)), p50: Math.max(...parts.map((x) => x.latency_ms.p50)), p99: Math.max(...parts.map((x) => x.latency_ms.p99)) },
          total: sum((x) => x.total),
          ok_2xx: sum((x) => x.ok_2xx),
          non_2xx: sum((x) => x.non_2xx),
          status_codes: parts.reduce((acc, x) => { for (const [k, v] of Object.entries(x.status_codes)) acc[k] = (acc[k] ?? 0) + v; return acc }, {}),
          errors: sum((x) => x.errors),
          timeouts: sum((x) => x.timeouts),
          connections: CONNECTIONS,
          chained_responses: stats.reduce((a, x) => a + x.measure.chained, 0),
          repeated_tokens: stats.reduce((a, x) => a + x.warmup.repeated + x.measure.repeated, 0)
        }
        const ticks = before.every((b) => b !== undefined) && after.every((a) => a !== undefined) ? after.reduce((a, x, i) => a + x - before[i], 0) : undefined
        r.server_cpu_us_per_request = ticks === undefined || r.total === 0 ? undefined : (ticks * 1e6) / CLK_TCK / r.total
        // Only meaningful for a cluster on this machine (not BENCH_PG_URL's server elsewhere).
        r.postgres_cpu_us_per_request = pgAfter.size === 0 || r.total === 0 ? undefined : (postgresDelta(pgBefore, pgAfter) * 1e6) / CLK_TCK / r.total
        out[instances === 1 ? 'one' : 'two'] = r
      } finally {
        for (const s of servers) await stop(s.child)
      }
      out[instances === 1 ? 'one' : 'two'].server_events = await countEvents(database)
    }
  } finally {
    if (cluster !== undefined) cluster.stop()
    else {
      const c = new pg.Client({ connectionString: admin })
      await c.connect()
      for (const name of databases) await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await c.end()
    }
  }
  return out
}

async function benchPrimitives (dir) {
  process.stdout.write('  primitives: sign, rotation transaction, argon2 verify\n')
  const env = { ...baseEnv(), BENCH_TMP: dir }
  for (const k of ['BENCH_PRIMITIVE_MS', 'BENCH_ARGON2_SAMPLES']) if (process.env[k] !== undefined) env[k] = process.env[k]
  const child = launch('primitives', [process.execPath, 'bench/primitives.js'], env)
  const line = await firstLine(child, 120_000)
  const { code } = await child.exited
  if (code !== 0) throw new BenchError(`primitives exited with ${code}\n${child.stderrText}`)
  return JSON.parse(line)
}

// ---------------------------------------------------------------------------------------------
// Report.
const f0 = (n) => (n === undefined ? '-' : Math.round(n).toLocaleString('en-US'))
const f2 = (n) => (n === undefined ? '-' : n.toFixed(2))
const ratio = (a, b) => (a === undefined || b === undefined || b === 0 ? undefined : a / b)

function report (r) {
  // autocannon records latency in whole milliseconds; the mean keeps the fraction.
  const rows = [['run', 'conns', 'req/s', 'mean ms', 'p50 ms', 'p99 ms', 'non-2xx', 'errors', 'server cpu µs/req']]
  for (const [name, x] of [['H hello world', r.hello], ['refresh grant', r.refresh], ['peer refresh (oauth2-server)', r.peer], ['password grant', r.password], [`refresh, ${SEEDED.toLocaleString('en-US')} sessions stored`, r.refresh_seeded]]) {
    if (x === undefined) continue
    rows.push([name, String(x.connections), f0(x.requests_per_s), f2(x.latency_ms.mean), f2(x.latency_ms.p50), f2(x.latency_ms.p99), String(x.non_2xx), String(x.errors + x.timeouts), f0(x.server_cpu_us_per_request)])
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)))
  const lines = rows.map((row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '))
  console.log('\n' + lines.join('\n'))
  if (r.refresh?.server_events !== undefined) {
    const ev = r.refresh.server_events
    console.log(`\nrefresh chain check: ${r.refresh.chained_responses} responses carried a successor token (${r.refresh.repeated_tokens} repeats); the server recorded ${ev.token_rotated ?? 0} rotations (warm-up included), ${ev.refresh_replayed ?? 0} replays, ${ev.reuse_detected ?? 0} reuse detections`)
  }
  if (r.ratios.refresh_over_h !== undefined) console.log(`\nrefresh / H  = ${r.ratios.refresh_over_h.toFixed(3)}   (goal, ES256: >= 0.20)`)
  if (r.ratios.refresh_over_peer !== undefined) console.log(`refresh / peer = ${r.ratios.refresh_over_peer.toFixed(2)}   (@node-oauth/oauth2-server with a SQLite model; goal >= 2)`)
  if (r.ratios.seeded_over_empty !== undefined) console.log(`refresh with ${SEEDED.toLocaleString('en-US')} stored sessions / empty database = ${r.ratios.seeded_over_empty.toFixed(2)}   (goal >= 0.95; database file ${(r.refresh_seeded.db_bytes / 2 ** 20).toFixed(0)} MiB)`)
  if (r.ratios.password_over_h !== undefined) console.log(`password / H = ${r.ratios.password_over_h.toFixed(4)}`)
  if (r.refresh?.server_cpu_us_per_request !== undefined) console.log(`server CPU per refresh = ${f0(r.refresh.server_cpu_us_per_request)} µs   (goal <= 250 µs on the reference 2-core box)`)
  if (r.ratios.refresh_p99_over_h !== undefined) console.log(`refresh p99 / H p99 = ${r.ratios.refresh_p99_over_h.toFixed(1)}   (goal <= 3)`)
  const rss = (x, k) => f0(x?.rss_mib?.[k])
  if (r.hello?.rss_mib !== undefined && r.refresh?.rss_mib !== undefined) {
    console.log(`RSS, MiB: H ${rss(r.hello, 'before')} idle, ${rss(r.hello, 'after')} after load; Tokenline ${f0(r.rss_idle_mib)} idle (goal <= H + 40), ${rss(r.refresh, 'before')} after the logins that set up the run, ${rss(r.refresh, 'after')} after the refresh load` +
      (r.password === undefined ? '' : `, ${rss(r.password, 'before')} before the password storm, ${rss(r.password, 'after')} at its end, ${rss(r.password, 'settled')} 5 s later (goal within 10% of before)`))
  }
  if (r.ratios.pg_over_sqlite !== undefined) console.log(`refresh on PostgreSQL / on SQLite = ${r.ratios.pg_over_sqlite.toFixed(2)}   (PostgreSQL / H = ${f2(r.ratios.pg_over_h)}; server CPU per refresh ${f0(r.postgres.one.server_cpu_us_per_request)} µs, and PostgreSQL's own ${f0(r.postgres.one.postgres_cpu_us_per_request)} µs)`)
  if (r.ratios.pg_two_over_one !== undefined) console.log(`two instances / one on PostgreSQL = ${r.ratios.pg_two_over_one.toFixed(2)}   (on this 2-core box the instances, PostgreSQL and the load generator share the cores)`)
  if (r.ratios.cpu_h_over_refresh !== undefined) console.log(`server CPU per request, H / refresh = ${r.ratios.cpu_h_over_refresh.toFixed(3)}   (the same ratio by CPU cost; steadier on a busy box)`)
  const p = r.primitives
  if (p !== undefined) {
    console.log('\nprimitives (no HTTP, on the server core):')
    console.log(`  S  sign ES256 (fast-jwt sync)      ${f0(p.sign_es256.ops_per_s)} ops/s  (cpu ${f0(p.sign_es256.cpu_us_per_op)} µs/op)`)
    console.log(`  T  rotation (store.refresh)        ${f0(p.rotation.ops_per_s)} ops/s  (cpu ${f0(p.rotation.cpu_us_per_op)} µs/op; wall: transaction ${f0(p.rotation.store_txn_us)} µs + token crypto ${f0(p.rotation.token_crypto_us)} µs)`)
    console.log(`  A  argon2id verify ${p.argon2.params}  mean ${f2(p.argon2.verify_ms_mean)} ms, p50 ${f2(p.argon2.verify_ms_p50)} ms  (${f2(p.argon2.ops_per_s_k1)}/s at k=1, ${f2(p.argon2.ops_per_s_k2)}/s at k=2)`)
    if (r.ratios.refresh_composition !== undefined) {
      console.log(`  refresh ceiling from parts 1/(1/H + 1/S + 1/T) = ${f0(r.ratios.refresh_ceiling)} req/s; measured is ${r.ratios.refresh_composition.toFixed(2)} of it`)
    }
    if (r.ratios.password_over_a1 !== undefined) console.log(`  password / A(k=1) = ${r.ratios.password_over_a1.toFixed(2)}`)
  }
  console.log(`\npinning: ${r.env.pinned ? `server on cpu ${SERVER_CPU}, loader on cpu ${LOADER_CPU} (taskset)` : 'none (taskset unavailable, < 2 cpus, or BENCH_PIN=0)'}`)
  console.log(`load average before/after: ${r.env.loadavg_before.map(f2).join(' ')} / ${r.env.loadavg_after.map(f2).join(' ')}  (figures are only comparable on a quiet box)`)
}

async function main () {
  const dir = mkdtempSync(join(tmpdir(), 'tokenline-bench-'))
  tempDirs.add(dir)
  if (PROFILE_DIR !== undefined) mkdirSync(PROFILE_DIR, { recursive: true })
  const env = {
    node: process.version,
    cpu: cpus()[0]?.model ?? 'unknown',
    cpus: CPUS,
    pinned,
    server_cpu: pinned ? SERVER_CPU : null,
    loader_cpu: pinned ? LOADER_CPU : null,
    duration_s: DURATION,
    warmup_s: WARMUP,
    connections: CONNECTIONS,
    password_connections: PASSWORD_CONNECTIONS,
    argon2: ARGON2,
    git: spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).stdout?.trim() || null,
    loadavg_before: loadavg()
  }
  console.log(`tokenline bench: node ${env.node}, ${env.cpus} cpus (${env.cpu}), ${DURATION} s runs after ${WARMUP} s warm-up, pinning ${pinned ? 'on' : 'off'}`)
  const results = { at: new Date().toISOString(), env }
  try {
    if (ONLY.has('primitives') && PROFILE_DIR === undefined) results.primitives = await benchPrimitives(dir)
    if (ONLY.has('h')) results.hello = await benchHello()
    if (ONLY.has('refresh') || ONLY.has('password')) Object.assign(results, await benchTokenline(dir))
    if (ONLY.has('peer')) results.peer = await benchPeer(dir)
    if (ONLY.has('refresh') && SEEDED > 0) results.refresh_seeded = (await benchTokenline(dir, SEEDED)).refresh
    if (ONLY.has('pg')) results.postgres = await benchPostgres()
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  env.loadavg_after = loadavg()

  const h = results.hello?.requests_per_s
  const p = results.primitives
  const ceiling = h !== undefined && p !== undefined ? 1 / (1 / h + 1 / p.sign_es256.ops_per_s + 1 / p.rotation.ops_per_s) : undefined
  results.ratios = {
    refresh_over_h: ratio(results.refresh?.requests_per_s, h),
    refresh_over_peer: ratio(results.refresh?.requests_per_s, results.peer?.requests_per_s),
    seeded_over_empty: ratio(results.refresh_seeded?.requests_per_s, results.refresh?.requests_per_s),
    refresh_p99_over_h: ratio(results.refresh?.latency_ms.p99, results.hello?.latency_ms.p99),
    password_over_h: ratio(results.password?.requests_per_s, h),
    refresh_ceiling: ceiling,
    refresh_composition: ratio(results.refresh?.requests_per_s, ceiling),
    password_over_a1: ratio(results.password?.requests_per_s, p?.argon2.ops_per_s_k1),
    cpu_h_over_refresh: ratio(results.hello?.server_cpu_us_per_request, results.refresh?.server_cpu_us_per_request),
    pg_over_sqlite: ratio(results.postgres?.one?.requests_per_s, results.refresh?.requests_per_s),
    pg_two_over_one: ratio(results.postgres?.two?.requests_per_s, results.postgres?.one?.requests_per_s),
    pg_over_h: ratio(results.postgres?.one?.requests_per_s, h)
  }
  report(results)

  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true })
  writeFileSync(join(ROOT, 'bench', 'results', 'latest.json'), JSON.stringify(results, null, 2) + '\n')
  console.log('results: bench/results/latest.json')
  if (PROFILE_DIR !== undefined) console.log(`cpu profile of the server: ${PROFILE_DIR} (node bench/profile-summary.js ${PROFILE_DIR})`)

  // A correct run has no failed request anywhere; a broken chain shows as 400 invalid_grant here.
  const problems = []
  for (const [name, x] of [['H', results.hello], ['refresh', results.refresh], ['peer', results.peer], ['password', results.password], ['refresh (seeded)', results.refresh_seeded], ['refresh (PostgreSQL)', results.postgres?.one], ['refresh (PostgreSQL, 2 instances)', results.postgres?.two]]) {
    if (x === undefined) continue
    // A 503 from the argon2 gate is the password grant shedding load as designed (a waiter waited
    // longer than TOKENLINE_ARGON2_QUEUE_WAIT): worth a warning, not a failure.
    const shed = name === 'password' ? (x.status_codes['503'] ?? 0) : 0
    if (shed > 0) process.stderr.write(`bench: warning: the argon2 gate shed ${shed} logins with 503 (an overloaded box, or more connections than the gate queues)\n`)
    if (x.non_2xx - shed > 0 || x.errors > 0 || x.timeouts > 0) {
      problems.push(`${name}: ${x.non_2xx} non-2xx ${JSON.stringify(x.status_codes)}, ${x.errors} errors, ${x.timeouts} timeouts`)
    }
    if (x.ok_2xx === 0) problems.push(`${name}: no successful response at all`)
  }
  const rf = results.refresh
  if (rf !== undefined) {
    if (rf.chained_responses < rf.ok_2xx) problems.push(`refresh: only ${rf.chained_responses} of ${rf.ok_2xx} responses carried a successor token`)
    if (rf.repeated_tokens > 0) problems.push(`refresh: ${rf.repeated_tokens} responses repeated the token already held (grace replays, not rotations)`)
    const ev = rf.server_events
    for (const bad of ['refresh_replayed', 'reuse_detected', 'fingerprint_mismatch', 'session_revoked']) {
      if ((ev[bad] ?? 0) === 0) continue
      // autocannon re-sends a timed-out request on a new connection: the server had rotated that token
      // already, so the re-sent parent gets the grace replay. Explained, but still not a clean run.
      const why = bad === 'refresh_replayed' && rf.timeouts >= ev[bad] ? ` (after ${rf.timeouts} timeouts: re-sent requests whose first response never arrived)` : ''
      problems.push(`refresh: the server recorded ${ev[bad]} ${bad} events${why}`)
    }
    if ((ev.token_rotated ?? 0) < rf.ok_2xx) problems.push(`refresh: the server recorded ${ev.token_rotated ?? 0} rotations for ${rf.ok_2xx} successful responses`)
  }
  if (problems.length > 0) fail(`FAILED\n  ${problems.join('\n  ')}`)
}

main().catch((err) => {
  if (!(err instanceof BenchError)) process.stderr.write(`bench: ${err.stack ?? err}\n`)
  else if (process.exitCode !== 1) process.stderr.write(`bench: ${err.message}\n`)
  process.exitCode = 1
  killChildren()
})
