// Raw primitives behind the refresh and password figures of `npm run bench`, measured on the built
// dist/ modules (the code the server runs), with no HTTP. run.js starts this in a child process on
// the server's core and reads one JSON line from stdout.
//
//   S  sign:     fast-jwt ES256 sync signer built by server/tokens/signing-keys.ts, claims shaped like server/tokens/response.ts
//   T  rotation: store.refresh() with the real decide(), one BEGIN IMMEDIATE transaction per call,
//                on a real SQLite file with the server's pragmas; plus the token crypto around it
//   A  argon2:   verify latency at the production parameters (m=19456, t=2, p=1)
//
// BENCH_PRIMITIVE_MS (time per measured primitive, default 1500), BENCH_ARGON2_SAMPLES (20).
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openDatabase } from '../dist/db/sqlite/database.js'
import { createStore } from '../dist/db/sqlite/store.js'
import { decide } from '../dist/server/grants/refresh-token.js'
import { generateKey, makeSigner } from '../dist/server/tokens/signing-keys.js'
import { resolveOptions } from '../dist/server/options.js'
import { createPasswords } from '../dist/server/security/passwords.js'
import { digest, isWellFormedRefreshToken, newRefreshToken, randomId, sealSuccessor } from '../dist/server/tokens/refresh-format.js'

const ARGON2_PARAMS = { memoryCost: 19456, timeCost: 2, parallelism: 1 }
const ms = Number(process.env.BENCH_PRIMITIVE_MS ?? 1500)
const argonSamples = Number(process.env.BENCH_ARGON2_SAMPLES ?? 20)

/**
 * Calls fn (sync or async) repeatedly for about `budget` ms after a short warm-up. Returns ops/s by the
 * wall clock and this process's CPU time per op (steadier when other work shares the core).
 */
async function measure (fn, budget = ms) {
  const warmEnd = performance.now() + Math.min(300, budget / 4)
  while (performance.now() < warmEnd) await fn()
  let n = 0
  const cpu = process.cpuUsage()
  const start = performance.now()
  let now = start
  while (now - start < budget) {
    for (let i = 0; i < 100; i++) await fn()
    n += 100
    now = performance.now()
  }
  const used = process.cpuUsage(cpu)
  return { ops_per_s: n / ((now - start) / 1000), cpu_us_per_op: (used.user + used.system) / n }
}

function signPrimitive () {
  const sign = makeSigner(generateKey('ES256'))
  const now = Math.floor(Date.now() / 1000)
  const claims = () => ({
    iss: 'http://localhost:3000',
    sub: randomId(),
    aud: 'http://localhost:3000',
    exp: now + 900,
    iat: now,
    jti: randomId(),
    client_id: 'bench',
    scope: 'read write',
    sid: 'sessionid-000000000000'
  })
  return measure(() => { sign(claims()) })
}

async function rotationPrimitive () {
  // Under run.js's own temporary directory, which it removes however it ends.
  const dir = mkdtempSync(join(process.env.BENCH_TMP ?? tmpdir(), 'tokenline-bench-prim-'))
  const file = join(dir, 'rotation.db')
  const store = createStore(openDatabase(file))
  try {
    const opts = resolveOptions({ database: file })
    const tl = { opts, binding: { userAgent: opts.bindingUserAgent, ip: opts.bindingIp, deviceId: opts.bindingDeviceId } }
    const t0 = Date.now()
    await store.createUser({ id: 'u1', username: 'bench', passwordHash: 'not-a-hash', now: t0 })
    await store.createClient({ id: 'bench', secretDigest: null, delivery: 'body', grants: 'password refresh_token', scopes: 'read write', origins: '', accessTtl: null, idleTtl: null, sessionTtl: null, now: t0 })
    const client = await store.findClient('bench')
    const meta = { ip: '127.0.0.1', userAgent: 'tokenline-bench/1', deviceId: null }
    // Several live sessions, rotated round-robin, as under a multi-connection load.
    const live = []
    for (let i = 0; i < 64; i++) {
      const token = newRefreshToken()
      await store.startSession({ id: randomId(), userId: 'u1', clientId: 'bench', scope: 'read write', meta, now: t0, idleExpiresAt: t0 + 86400e3, expiresAt: t0 + 86400e3, tokenDigest: digest(token), events: [] })
      live.push(token)
    }
    let i = 0
    let cryptoNs = 0n
    let storeNs = 0n
    let ops = 0
    const rotate = async () => {
      const slot = i++ % live.length
      const token = live[slot]
      const a = process.hrtime.bigint()
      if (!isWellFormedRefreshToken(token)) throw new Error('bench: malformed token')
      const child = newRefreshToken()
      const input = { digest: digest(token), now: Date.now(), meta, childDigest: digest(child), sealed: sealSuccessor(token, child) }
      const b = process.hrtime.bigint()
      const result = await store.refresh({
        ...input,
        decide: (state) => decide({ tl, client, meta, now: input.now, requestedScope: undefined, fromCookie: false }, state)
      })
      const c = process.hrtime.bigint()
      if (result.kind !== 'rotated') throw new Error(`bench: rotation primitive got ${result.kind}`)
      live[slot] = child
      cryptoNs += b - a
      storeNs += c - b
      ops++
    }
    const rate = await measure(rotate)
    return {
      ...rate,
      // Per-rotation split over every call (warm-up included): token crypto vs the store transaction.
      token_crypto_us: Number(cryptoNs) / ops / 1000,
      store_txn_us: Number(storeNs) / ops / 1000
    }
  } finally {
    store.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

async function argon2Primitive () {
  const passwords = createPasswords(ARGON2_PARAMS)
  const hash = await passwords.hash('correct horse battery staple')
  // The first verify also builds the dummy hash (server/security/passwords.ts); keep it out of the samples.
  for (let i = 0; i < 2; i++) await passwords.verify(hash, 'correct horse battery staple')
  const samples = []
  for (let i = 0; i < argonSamples; i++) {
    const t = performance.now()
    if (!await passwords.verify(hash, 'correct horse battery staple')) throw new Error('bench: argon2 verify failed')
    samples.push(performance.now() - t)
  }
  samples.sort((a, b) => a - b)
  const mean = samples.reduce((s, x) => s + x, 0) / samples.length
  // Two verifies in flight: what a 2-thread cap would give on the cores this process may use.
  const pairs = Math.max(2, Math.floor(argonSamples / 2))
  const t = performance.now()
  for (let i = 0; i < pairs; i++) {
    await Promise.all([passwords.verify(hash, 'correct horse battery staple'), passwords.verify(hash, 'correct horse battery staple')])
  }
  const k2 = (pairs * 2) / ((performance.now() - t) / 1000)
  return {
    params: `m=${ARGON2_PARAMS.memoryCost},t=${ARGON2_PARAMS.timeCost},p=${ARGON2_PARAMS.parallelism}`,
    hash_prefix: hash.split('$').slice(0, 4).join('$'),
    verify_ms_mean: mean,
    verify_ms_p50: samples[Math.floor(samples.length / 2)],
    verify_ms_min: samples[0],
    verify_ms_max: samples[samples.length - 1],
    ops_per_s_k1: 1000 / mean,
    ops_per_s_k2: k2
  }
}

const out = {
  sign_es256: await signPrimitive(),
  rotation: await rotationPrimitive(),
  argon2: await argon2Primitive()
}
process.stdout.write(JSON.stringify(out) + '\n')
