import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { Tokenline } from '../context.js'
import { grants } from '../grants/index.js'
import { checkMetricsToken } from '../http/bearer-auth.js'
import { oauthError, str, type RouteDoc } from '../api-docs.js'

/*
 * Operations endpoints: GET /healthz and GET /metrics (Prometheus text exposition 0.0.4).
 *
 * prom-client (15.x: maintained, no native code, engines include Node 20) renders the exposition format
 * with its escaping, histogram buckets and `+Inf` handled; each plugin instance has its own Registry, so
 * two Tokenline instances (or a host app using prom-client's global registry) never collide. Process
 * metrics (CPU, heap, event loop) are the host's business and are not collected here.
 */

/** Seconds; the password grant spends most of its time in argon2 (tens of ms), a refresh well under 5 ms. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

interface Outcome { error: string, reason: string }

const health = {
  type: 'object',
  properties: {
    status: str('`ok` or `error`', { enum: ['ok', 'error'] }),
    database: str('`ok` or `unreachable`'),
    migrations: { type: 'object', properties: { applied: { type: 'integer' }, expected: { type: 'integer' } } },
    error: str('what is wrong, when status is error')
  }
}

const healthzDoc: RouteDoc = {
  summary: 'Liveness: database reachable and migrations current',
  tags: ['operations'],
  response: {
    200: { ...health, description: 'healthy' },
    503: { ...health, description: 'database unreachable, or its schema is not this version\'s' }
  }
}

const metricsDoc: RouteDoc = {
  summary: 'Prometheus metrics (text exposition 0.0.4)',
  description: 'Needs `Authorization: Bearer <TOKENLINE_METRICS_TOKEN>` when that setting is set.',
  tags: ['operations'],
  security: [{}, { metricsToken: [] }],
  response: {
    200: { description: 'metrics', content: { 'text/plain; version=0.0.4': { schema: { type: 'string' } } } },
    401: oauthError('invalid_token: missing or wrong metrics token')
  }
}

export interface Metrics {
  registry: Registry
}

/**
 * Registers /healthz and /metrics in Tokenline's encapsulated context, and the hooks that feed the
 * metrics. Called before the other routes are registered, so the hooks reach every Tokenline route.
 */
export async function opsRoutes (app: FastifyInstance, tl: Tokenline): Promise<Metrics> {
  const registry = new Registry()
  const requests = new Counter({
    name: 'tokenline_token_requests_total',
    help: 'POST /token requests by grant type and outcome (ok, or the RFC 6749 error code and Tokenline reason)',
    labelNames: ['grant_type', 'outcome', 'reason'] as const,
    registers: [registry]
  })
  const latency = new Histogram({
    name: 'tokenline_token_request_duration_seconds',
    help: 'Time to answer POST /token, by grant type',
    labelNames: ['grant_type'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry]
  })
  const reuse = new Counter({
    name: 'tokenline_reuse_detections_total',
    help: 'Consumed refresh tokens presented again (each revoked its session)',
    registers: [registry]
  })
  const events = new Counter({
    name: 'tokenline_security_events_total',
    help: 'Security events recorded, by type',
    labelNames: ['type'] as const,
    registers: [registry]
  })
  const throttled = new Counter({
    name: 'tokenline_throttled_requests_total',
    help: 'Requests refused with 429, or 503 and Retry-After (throttling, login storm, busy database), by status',
    labelNames: ['status'] as const,
    registers: [registry]
  })
  // eslint-disable-next-line no-new -- registered in `registry`; read through it
  new Gauge({
    name: 'tokenline_live_sessions',
    help: 'Sessions usable now: not revoked, not idle, not past their absolute expiry',
    registers: [registry],
    async collect () { this.set(await tl.store.countLiveSessions(tl.opts.now())) }
  })

  // Every counter starts at 0 for the main label sets, so dashboards and rate() see them before the first event.
  for (const g of grants.keys()) latency.zero({ grant_type: g })
  for (const g of grants.keys()) requests.inc({ grant_type: g, outcome: 'ok', reason: '' }, 0)
  reuse.inc(0)

  tl.onEvents = (list) => {
    for (const e of list) {
      events.inc({ type: e.type })
      if (e.type === 'reuse_detected') reuse.inc()
    }
  }

  const tokenUrl = `${tl.prefix}/token`
  const outcomes = new WeakMap<FastifyRequest, Outcome>()

  // The error body is already serialised here; reading `error` and `reason` back from it counts every
  // refusal the same way, whichever hook or handler produced it (parsers, throttling, the grants).
  app.addHook('onSend', async (request: FastifyRequest, reply: FastifyReply, payload: unknown) => {
    if (reply.statusCode >= 400 && request.routeOptions.url === tokenUrl && typeof payload === 'string') {
      try {
        const body = JSON.parse(payload) as { error?: unknown, reason?: unknown }
        outcomes.set(request, {
          error: typeof body.error === 'string' ? body.error : `http_${reply.statusCode}`,
          reason: typeof body.reason === 'string' ? body.reason : ''
        })
      } catch {
        outcomes.set(request, { error: `http_${reply.statusCode}`, reason: '' })
      }
    }
    return payload
  })

  app.addHook('onResponse', async (request: FastifyRequest, reply: FastifyReply) => {
    const status = reply.statusCode
    if (status === 429 || (status === 503 && reply.hasHeader('retry-after'))) throttled.inc({ status: String(status) })
    if (request.routeOptions.url !== tokenUrl || request.method !== 'POST') return
    const raw = (request.body as Record<string, unknown> | undefined)?.grant_type
    const grant = typeof raw === 'string' && grants.has(raw) ? raw : raw === undefined ? 'none' : 'other'
    const o = outcomes.get(request)
    requests.inc({ grant_type: grant, outcome: status < 400 ? 'ok' : o?.error ?? `http_${status}`, reason: o?.reason ?? '' })
    latency.observe({ grant_type: grant }, reply.elapsedTime / 1000)
  })

  app.get('/healthz', { config: { openapi: healthzDoc } }, async (request, reply) => {
    reply.header('cache-control', 'no-store')
    try {
      const { schemaVersion, expectedVersion } = await tl.store.health()
      const migrations = { applied: schemaVersion, expected: expectedVersion }
      if (schemaVersion !== expectedVersion) {
        return await reply.code(503).send({ status: 'error', database: 'ok', migrations, error: 'database schema does not match this version of tokenline' })
      }
      return { status: 'ok', database: 'ok', migrations }
    } catch (err) {
      request.log.error({ err }, 'tokenline: health check failed')
      return await reply.code(503).send({ status: 'error', database: 'unreachable' })
    }
  })

  app.get('/metrics', { config: { openapi: metricsDoc } }, async (request, reply) => {
    if (tl.opts.metricsToken !== '') checkMetricsToken(tl.opts.metricsToken, request)
    const text = await registry.metrics()
    reply.header('cache-control', 'no-store')
    reply.type(registry.contentType)
    return text
  })

  return { registry }
}
