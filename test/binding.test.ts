import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import { join } from 'node:path'
import { buildServer } from '../server/standalone/app.js'
import { fromEnv, resolveOptions, type Policy } from '../server/options.js'
import { createPasswords } from '../server/security/passwords.js'
import tokenline from '../server/plugin.js'
import { trustProxyFor } from '../server/standalone/proxy.js'
import { ipPrefix, normaliseIp, sameNetwork } from '../server/security/fingerprint.js'
import { CHEAP_ARGON2, build, form, PASSWORD, TestClock } from './helpers.js'

/*
 * Fingerprint binding (SPEC section 8; security.md F1-F3): user agent (normalised), IP (/24, /64,
 * IPv4-mapped = IPv4) and an optional device id, each under each policy; where the IP comes from.
 */

const CHROME_120_WIN = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'
const FIREFOX_121_WIN = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0'

interface Device { ua?: string, ip?: string, xff?: string, deviceId?: string }
const HOME: Required<Omit<Device, 'xff'>> = { ua: CHROME_120_WIN, ip: '203.0.113.7', deviceId: 'phone-1' }

/** POST /token from a given device: its user agent, socket address, X-Forwarded-For and device id. */
async function post (app: FastifyInstance, params: Record<string, string>, d: Device): Promise<LightMyRequestResponse> {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' }
  if (d.ua !== undefined) headers['user-agent'] = d.ua
  if (d.xff !== undefined) headers['x-forwarded-for'] = d.xff
  const p = { ...params }
  if (d.deviceId !== undefined) p.device_id = d.deviceId
  return await app.inject({ method: 'POST', url: '/token', headers, payload: form(p), remoteAddress: d.ip ?? '127.0.0.1' })
}

async function login (app: FastifyInstance, d: Device, client = 'cli'): Promise<{ rt: string, sid: string }> {
  const res = await post(app, { grant_type: 'password', client_id: client, username: 'alice', password: PASSWORD }, d)
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.body}`)
  const body = res.json()
  const sid = JSON.parse(Buffer.from(body.access_token.split('.')[1], 'base64url').toString()).sid as string
  return { rt: body.refresh_token, sid }
}

const refresh = async (app: FastifyInstance, rt: string, d: Device, client = 'cli'): Promise<LightMyRequestResponse> =>
  await post(app, { grant_type: 'refresh_token', client_id: client, refresh_token: rt }, d)

async function mismatches (app: FastifyInstance, sid: string): Promise<Array<{ reason: string | null, signals: string[] }>> {
  const events = await app.tokenline.store.listEvents({ sessionId: sid })
  return events.filter((e) => e.type === 'fingerprint_mismatch').map((e) => ({ reason: e.reason, signals: (JSON.parse(e.detail ?? '{}') as { signals: string[] }).signals }))
}

const CHANGES: Array<{ name: string, option: 'bindingUserAgent' | 'bindingIp' | 'bindingDeviceId', signal: string, device: Device }> = [
  { name: 'changed user agent', option: 'bindingUserAgent', signal: 'user_agent', device: { ...HOME, ua: FIREFOX_121_WIN } },
  { name: 'changed IP (another /24)', option: 'bindingIp', signal: 'ip', device: { ...HOME, ip: '198.51.100.9' } },
  { name: 'changed device id', option: 'bindingDeviceId', signal: 'device_id', device: { ...HOME, deviceId: 'phone-2' } },
  { name: 'missing device id', option: 'bindingDeviceId', signal: 'device_id', device: { ua: HOME.ua, ip: HOME.ip } }
]
const POLICIES: Policy[] = ['ignore', 'log', 'reject', 'revoke']

t.test('each signal under each policy', async (t) => {
  for (const change of CHANGES) {
    for (const policy of POLICIES) {
      await t.test(`${change.name}, ${policy}`, async (t) => {
        const h = await build(t, { [change.option]: policy })
        const { rt, sid } = await login(h.app, HOME)
        const res = await refresh(h.app, rt, change.device)
        const events = await mismatches(h.app, sid)
        const session = await h.app.tokenline.store.findSession(sid)
        switch (policy) {
          case 'ignore':
            t.equal(res.statusCode, 200, 'refreshes')
            t.same(events, [], 'no event')
            break
          case 'log':
            t.equal(res.statusCode, 200, 'refreshes')
            t.same(events, [{ reason: 'log', signals: [change.signal] }], 'one fingerprint_mismatch event naming the signal')
            break
          case 'reject': {
            t.equal(res.statusCode, 400)
            t.equal(res.json().error, 'invalid_grant')
            t.equal(res.json().reason, 'fingerprint_mismatch')
            t.same(events, [{ reason: 'reject', signals: [change.signal] }])
            t.equal(session?.revokedAt, null, 'the session lives on')
            const ok = await refresh(h.app, rt, HOME)
            t.equal(ok.statusCode, 200, 'the same token still works from the right device')
            break
          }
          case 'revoke': {
            t.equal(res.statusCode, 400)
            t.equal(res.json().reason, 'fingerprint_mismatch')
            t.same(events, [{ reason: 'revoke', signals: [change.signal] }])
            t.equal(session?.revokedReason, 'fingerprint_mismatch', 'the session is revoked')
            const dead = await refresh(h.app, rt, HOME)
            t.equal(dead.statusCode, 400, 'dead from the right device too')
            t.equal(dead.json().reason, 'fingerprint_mismatch')
            break
          }
        }
        for (const e of await h.app.tokenline.store.listEvents({})) t.notMatch(JSON.stringify(e), /tlrt_/, `${e.type} event carries no token`)
      })
    }
  }
})

t.test('the defaults: user agent revoke, device id revoke, IP log', async (t) => {
  const h = await build(t)
  t.same(h.app.tokenline.binding, { userAgent: 'revoke', ip: 'log', deviceId: 'revoke' })
  const { rt, sid } = await login(h.app, HOME)
  const moved = await refresh(h.app, rt, { ...HOME, ip: '198.51.100.9' })
  t.equal(moved.statusCode, 200, 'a mobile network change does not log anyone out')
  t.same(await mismatches(h.app, sid), [{ reason: 'log', signals: ['ip'] }])
  const stolen = await refresh(h.app, moved.json().refresh_token, { ...HOME, ua: FIREFOX_121_WIN, deviceId: 'laptop' })
  t.equal(stolen.json().reason, 'fingerprint_mismatch')
  t.same((await mismatches(h.app, sid))[0], { reason: 'revoke', signals: ['user_agent', 'device_id'] }, 'the most severe policy wins; every changed signal is named')
})

t.test('a device id sent later to a session bound without one is not a change', async (t) => {
  const h = await build(t)
  const { rt, sid } = await login(h.app, { ua: HOME.ua, ip: HOME.ip })
  t.equal((await refresh(h.app, rt, HOME)).statusCode, 200)
  t.same(await mismatches(h.app, sid), [])
})

t.test('user agent normalisation: routine updates pass, another browser does not', async (t) => {
  const bumps: Array<[string, string, string]> = [
    ['Chrome 120 -> 121', CHROME_120_WIN, CHROME_120_WIN.replace('Chrome/120.0.0.0', 'Chrome/121.0.0.0')],
    ['Chrome full version', 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.71 Safari/537.36', 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.6167.85 Safari/537.36'],
    ['Firefox 120 -> 121', FIREFOX_121_WIN.replace(/121/g, '120'), FIREFOX_121_WIN],
    ['Safari 17.0 -> 17.1 (macOS)', 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15', 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15'],
    ['Safari on iOS 17.0 -> 17.1', 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1', 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1'],
    ['Edge 120 -> 121', `${CHROME_120_WIN} Edg/120.0.2210.91`, `${CHROME_120_WIN.replace('Chrome/120', 'Chrome/121')} Edg/121.0.2277.83`]
  ]
  const families: Array<[string, string, string]> = [
    ['Chrome -> Firefox', CHROME_120_WIN, FIREFOX_121_WIN],
    ['Chrome -> Edge', CHROME_120_WIN, `${CHROME_120_WIN} Edg/120.0.2210.91`],
    ['Safari -> Chrome on the same Mac', 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15', 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'],
    ['Chrome on Windows -> Chrome on Linux', CHROME_120_WIN, 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'],
    ['curl -> Chrome', 'curl/8.5.0', CHROME_120_WIN],
    ['no user agent at login, one later', '', CHROME_120_WIN]
  ]
  const h = await build(t)
  for (const [name, before, after] of bumps) {
    const { rt } = await login(h.app, { ...HOME, ua: before })
    t.equal((await refresh(h.app, rt, { ...HOME, ua: after })).statusCode, 200, `passes: ${name}`)
  }
  for (const [name, before, after] of families) {
    const { rt, sid } = await login(h.app, { ...HOME, ua: before })
    const res = await refresh(h.app, rt, { ...HOME, ua: after })
    t.equal(res.json().reason, 'fingerprint_mismatch', `a change: ${name}`)
    t.equal((await h.app.tokenline.store.findSession(sid))?.revokedReason, 'fingerprint_mismatch', 'revoked by default')
  }
})

t.test('IP matching', async (t) => {
  const h = await build(t, { bindingIp: 'reject' })
  const cases: Array<[string, string, string, boolean]> = [
    ['IPv4-mapped IPv6 at login, IPv4 later', '::ffff:203.0.113.7', '203.0.113.7', true],
    ['IPv4 at login, IPv4-mapped IPv6 later', '203.0.113.7', '::ffff:203.0.113.7', true],
    ['IPv4-mapped, another /24', '::ffff:203.0.113.7', '203.0.114.7', false],
    ['IPv4-mapped in hex, IPv4 later', '::ffff:cb00:7107', '203.0.113.7', true],
    ['IPv4-mapped spelled out in full', '0:0:0:0:0:ffff:203.0.113.7', '203.0.113.9', true],
    ['same /24', '203.0.113.7', '203.0.113.250', true],
    ['next /24', '203.0.113.7', '203.0.112.7', false],
    ['same /64', '2001:db8:1:2::1', '2001:db8:1:2:aaaa:bbbb:cccc:dddd', true],
    ['same /64, spelled out in full', '2001:db8:1:2::1', '2001:0db8:0001:0002:0000:0000:0000:0009', true],
    ['next /64', '2001:db8:1:2::1', '2001:db8:1:3::1', false],
    ['IPv4 -> IPv6 (dual stack switch)', '203.0.113.7', '2001:db8:1:2::1', false]
  ]
  for (const [name, first, then, same] of cases) {
    const { rt, sid } = await login(h.app, { ...HOME, ip: first })
    const res = await refresh(h.app, rt, { ...HOME, ip: then })
    t.equal(res.statusCode, same ? 200 : 400, `${name}: ${same ? 'same network' : 'a change'}`)
    if (!same) t.same(await mismatches(h.app, sid), [{ reason: 'reject', signals: ['ip'] }])
  }
  const { sid } = await login(h.app, { ...HOME, ip: '::ffff:203.0.113.7' })
  t.equal((await h.app.tokenline.store.findSession(sid))?.ip, '203.0.113.7', 'stored as plain IPv4')
})

t.test('the address text stored with sessions and events, and the prefixes compared, keep their format', async (t) => {
  // Existing databases hold these strings (sessions.ip, events.ip) and digests of the prefixes (lockout
  // keys), so every spelling must still come out exactly as written here.
  const cases: Array<[string, string, string]> = [
    ['203.0.113.7', '203.0.113.7', '203.0.113.0/24'],
    ['::ffff:203.0.113.7', '203.0.113.7', '203.0.113.0/24'],
    ['::FFFF:203.0.113.7', '203.0.113.7', '203.0.113.0/24'],
    ['::ffff:cb00:7107', '203.0.113.7', '203.0.113.0/24'],
    ['0:0:0:0:0:ffff:203.0.113.7', '203.0.113.7', '203.0.113.0/24'],
    ['::ffff:203.0.113.7%eth0', '203.0.113.7', '203.0.113.0/24'],
    ['2001:db8:1:2::1', '2001:0db8:0001:0002:0000:0000:0000:0001', '2001:0db8:0001:0002::/64'],
    ['2001:DB8:1:2::AbCd', '2001:0db8:0001:0002:0000:0000:0000:abcd', '2001:0db8:0001:0002::/64'],
    ['2001:0db8:0001:0002:0000:0000:0000:0001', '2001:0db8:0001:0002:0000:0000:0000:0001', '2001:0db8:0001:0002::/64'],
    ['fe80::1%eth0', 'fe80:0000:0000:0000:0000:0000:0000:0001', 'fe80:0000:0000:0000::/64'],
    ['FE80::1%en-0.1', 'fe80:0000:0000:0000:0000:0000:0000:0001', 'fe80:0000:0000:0000::/64'],
    ['::1', '0000:0000:0000:0000:0000:0000:0000:0001', '0000:0000:0000:0000::/64'],
    ['::', '0000:0000:0000:0000:0000:0000:0000:0000', '0000:0000:0000:0000::/64'],
    ['1:2:3:4:5:6:7::', '0001:0002:0003:0004:0005:0006:0007:0000', '0001:0002:0003:0004::/64'],
    ['1:2:3:4:5:6:1.2.3.4', '0001:0002:0003:0004:0005:0006:0102:0304', '0001:0002:0003:0004::/64'],
    // IPv4-compatible (RFC 4291 §2.5.5.1), not IPv4-mapped: an IPv6 address of its own.
    ['::1.2.3.4', '0000:0000:0000:0000:0000:0000:0102:0304', '0000:0000:0000:0000::/64'],
    ['64:ff9b::203.0.113.7', '0064:ff9b:0000:0000:0000:0000:cb00:7107', '0064:ff9b:0000:0000::/64'],
    // Not addresses (a trusted proxy may forward anything): kept as text, never read leniently.
    ['junk', 'junk', 'junk'],
    ['', '', ''],
    ['127.1', '127.1', '127.1'],
    ['0x7f.0.0.1', '0x7f.0.0.1', '0x7f.0.0.1'],
    ['01.2.3.4', '01.2.3.4', '01.2.3.4'],
    ['256.1.1.1', '256.1.1.1', '256.1.1.1'],
    [' 203.0.113.7', ' 203.0.113.7', ' 203.0.113.7'],
    ['::ffff:999.1.1.1', '999.1.1.1', '999.1.1.1'],
    ['1::2::3', '1::2::3', '1::2:::/64'],
    ['a:b:c:d:e', 'a:b:c:d:e', 'a:b:c:d::/64']
  ]
  for (const [ip, stored, prefix] of cases) {
    t.equal(normaliseIp(ip), stored, `${JSON.stringify(ip)} is stored as ${JSON.stringify(stored)}`)
    t.equal(ipPrefix(ip), prefix, `${JSON.stringify(ip)} is in ${JSON.stringify(prefix)}`)
  }

  // Every spelling of random addresses, against the expected text built from the groups alone.
  let seed = 1
  const rand = (n: number): number => { seed = (seed * 48271) % 2147483647; return seed % n }
  let wrong = 0
  for (let i = 0; i < 2000; i++) {
    const groups = Array.from({ length: 8 }, () => (rand(3) === 0 ? 0 : rand(0x10000)))
    const full = groups.map((g) => g.toString(16).padStart(4, '0')).join(':')
    const [g6, g7] = groups.slice(6) as [number, number]
    const quad = [g6 >> 8, g6 & 255, g7 >> 8, g7 & 255].join('.')
    const short = groups.map((g) => g.toString(16)).join(':')
    // The first run of zero groups, if any, compressed to `::`.
    const compressed = short.replace(/(^|:)0(:0)*(:|$)/, '::')
    const spellings = [full, short, compressed, full.toUpperCase(), `${compressed}%eth${rand(3)}`, `${short.split(':').slice(0, 6).join(':')}:${quad}`]
    const expected = full.startsWith('0000:0000:0000:0000:0000:ffff:') ? quad : full
    const expectedPrefix = expected === quad ? `${quad.split('.').slice(0, 3).join('.')}.0/24` : `${full.split(':').slice(0, 4).join(':')}::/64`
    for (const s of spellings) {
      if (normaliseIp(s) !== expected || ipPrefix(s) !== expectedPrefix) {
        if (wrong++ < 5) t.fail(`${s}: ${normaliseIp(s)} ${ipPrefix(s)}, expected ${expected} ${expectedPrefix}`)
      }
    }
    const v4 = [rand(256), rand(256), rand(256), rand(256)].join('.')
    if (normaliseIp(`::ffff:${v4}`) !== v4 || ipPrefix(`::ffff:${v4}`) !== ipPrefix(v4)) t.fail(`::ffff:${v4}`)
    const [a, b, c, d] = v4.split('.').map(Number) as [number, number, number, number]
    const compatible = `0000:0000:0000:0000:0000:0000:${((a << 8) | b).toString(16).padStart(4, '0')}:${((c << 8) | d).toString(16).padStart(4, '0')}`
    if (normaliseIp(`::${v4}`) !== compatible) t.fail(`::${v4}: ${normaliseIp(`::${v4}`)}`)
  }
  t.equal(wrong, 0, '2000 random addresses, six spellings each, with IPv4-mapped and IPv4-compatible ones: stored and prefixed as expected')

  t.ok(sameNetwork('2001:db8:1:2::1', '2001:0DB8:1:2:ffff::%eth1'), 'one /64, however spelled')
  t.notOk(sameNetwork('::1.2.3.4', '1.2.3.4'), 'IPv4-compatible is not IPv4')
  t.ok(sameNetwork('::ffff:1.2.3.4', '1.2.3.99'), 'IPv4-mapped is IPv4')
  t.notOk(sameNetwork(null, '1.2.3.4'), 'nothing bound')
})

t.test('the strict preset rejects a refresh from outside the bound prefix', async (t) => {
  t.equal(resolveOptions({ binding: 'strict' }).bindingIp, 'reject')
  t.equal(resolveOptions({ binding: 'strict', bindingIp: 'log' }).bindingIp, 'log', 'an explicit IP policy wins over the preset')
  t.equal(resolveOptions(fromEnv({ TOKENLINE_BINDING: 'strict' }).options).bindingIp, 'reject', 'TOKENLINE_BINDING=strict')

  const h = await build(t, { binding: 'strict' })
  const { rt, sid } = await login(h.app, HOME)
  const away = await refresh(h.app, rt, { ...HOME, ip: '198.51.100.9' })
  t.equal(away.json().reason, 'fingerprint_mismatch')
  t.same(await mismatches(h.app, sid), [{ reason: 'reject', signals: ['ip'] }])
  t.equal((await h.app.tokenline.store.findSession(sid))?.revokedAt, null, 'rejected, not revoked')
  const near = await refresh(h.app, rt, { ...HOME, ip: '203.0.113.99' })
  t.equal(near.statusCode, 200, 'the same /24 passes')
})

t.test('the grace window also requires a matching fingerprint', async (t) => {
  const h = await build(t)
  for (const [name, other] of [['another browser', { ...HOME, ua: FIREFOX_121_WIN }], ['another network', { ...HOME, ip: '198.51.100.9' }]] as const) {
    const { rt, sid } = await login(h.app, HOME)
    const first = await refresh(h.app, rt, HOME)
    const rt2 = first.json().refresh_token as string
    h.clock.advance(2)
    const again = await refresh(h.app, rt, HOME)
    t.equal(again.json().refresh_token, rt2, 'the same device within grace gets the same successor')
    const thief = await refresh(h.app, rt, other)
    t.equal(thief.json().reason, 'reuse_detected', `${name} within grace: reuse`)
    t.equal((await h.app.tokenline.store.findSession(sid))?.revokedReason, 'reuse_detected')
  }
})

/** A host app of our own making, so its trustProxy can be chosen. */
async function host (t: Test, trustProxy: boolean | string): Promise<FastifyInstance> {
  const dir = t.testdir({})
  const clock = new TestClock()
  const app = Fastify({ trustProxy })
  await app.register(tokenline, { database: join(dir, 'tl.db'), argon2: CHEAP_ARGON2, now: clock.now, logEvents: false, bindingIp: 'reject' })
  t.teardown(() => app.close())
  await seed(app)
  return app
}

async function seed (app: FastifyInstance): Promise<void> {
  const store = app.tokenline.store
  const now = app.tokenline.opts.now()
  await store.createUser({ id: 'u-alice', username: 'alice', passwordHash: await createPasswords(CHEAP_ARGON2).hash(PASSWORD), now })
  await store.createClient({ id: 'cli', secretDigest: null, delivery: 'body', grants: 'password refresh_token', scopes: '', origins: '', accessTtl: null, idleTtl: null, sessionTtl: null, now })
}

t.test('X-Forwarded-For', async (t) => {
  await t.test('ignored by default: the socket address is the client', async (t) => {
    const app = await host(t, false)
    const { rt, sid } = await login(app, { ...HOME, xff: '198.51.100.1' })
    t.equal((await app.tokenline.store.findSession(sid))?.ip, HOME.ip, 'bound to the socket, not the header')
    const ok = await refresh(app, rt, { ...HOME, xff: '192.0.2.1' })
    t.equal(ok.statusCode, 200, 'a different spoofed header changes nothing')
    const thief = await refresh(app, ok.json().refresh_token, { ...HOME, ip: '198.51.100.1', xff: HOME.ip })
    t.equal(thief.json().reason, 'fingerprint_mismatch', 'spoofing the bound address in the header does not help a thief')
  })

  await t.test('honoured when the host trusts its proxy', async (t) => {
    for (const trust of [true, '10.0.0.1'] as const) {
      const app = await host(t, trust)
      const proxy = '10.0.0.1'
      const { rt, sid } = await login(app, { ...HOME, ip: proxy, xff: HOME.ip })
      t.equal((await app.tokenline.store.findSession(sid))?.ip, HOME.ip, `trustProxy ${String(trust)}: bound to the client the proxy saw`)
      const moved = await refresh(app, rt, { ...HOME, ip: proxy, xff: '198.51.100.9' })
      t.equal(moved.json().reason, 'fingerprint_mismatch')
      const ok = await refresh(app, rt, { ...HOME, ip: proxy, xff: '203.0.113.50' })
      t.equal(ok.statusCode, 200)
    }
  })

  await t.test('standalone server: TOKENLINE_TRUST_PROXY believes only the hop the proxy appended', async (t) => {
    t.equal(fromEnv({}).server.trustProxy, false, 'off by default')
    t.equal(trustProxyFor(true), 'loopback', 'true never means Fastify\'s trust-every-hop')
    t.equal(trustProxyFor(0), false, 'zero hops: nobody')
    t.equal(fromEnv({ TOKENLINE_TRUST_PROXY: 'on' }).server.trustProxy, 'loopback', 'on: a proxy on this host')
    const cases: Array<[string, string, string]> = [
      // [setting, proxy address, where the bound IP must come from]
      ['on', '127.0.0.1', 'hop'],
      ['10.0.0.0/8', '10.0.0.1', 'hop'],
      ['1', '10.0.0.1', 'hop'],
      ['off', '127.0.0.1', 'socket'],
      ['on', '10.0.0.1', 'socket'] // not a loopback peer: its header is not believed
    ]
    for (const [setting, proxy, expect] of cases) {
      const dir = t.testdir({})
      const clock = new TestClock()
      const { trustProxy } = fromEnv({ TOKENLINE_TRUST_PROXY: setting }).server
      const app = await buildServer({ database: join(dir, 'tl.db'), argon2: CHEAP_ARGON2, now: clock.now, logEvents: false, binding: 'strict' }, { trustProxy, logLevel: 'silent' })
      t.teardown(() => app.close())
      await seed(app)
      // The client wrote the first entry itself; the proxy appended the address it really saw.
      const { rt, sid } = await login(app, { ...HOME, ip: proxy, xff: `192.0.2.66, ${HOME.ip}` })
      const bound = (await app.tokenline.store.findSession(sid))?.ip
      if (expect === 'hop') {
        t.equal(bound, HOME.ip, `${setting}: the proxy-appended hop, not the client-written entry`)
        const thief = await refresh(app, rt, { ...HOME, ip: proxy, xff: `${HOME.ip}, 198.51.100.9` })
        t.equal(thief.json().reason, 'fingerprint_mismatch', `${setting}: a thief writing the bound address first is still seen at its own`)
      } else {
        t.equal(bound, proxy, `${setting} with a proxy at ${proxy}: the socket address; the header is not believed`)
      }
    }
  })
})
