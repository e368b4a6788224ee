// Hand-written because the ready-made parsers (@fastify/formbody, qs, JSON.parse) turn a repeated parameter or `a[b]` into an array, an object or the last value, where RFC 6749 §3.2 needs a refusal.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { invalidRequest } from '../errors.js'
import type { Params } from './client-auth.js'

/**
 * Content-type parsers for Tokenline's routes, registered in their own encapsulated context so the
 * host keeps its own. Bodies become flat string maps with a null prototype: a repeated parameter,
 * an array or an object is `invalid_request` (RFC 6749 §3.2), and `__proto__` is just a key.
 */
export function registerParsers (app: FastifyInstance, bodyLimit: number): void {
  app.removeAllContentTypeParsers()

  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit }, (request, body, done) => {
    try {
      checkLabels(request)
      done(null, parseForm(body as string))
    } catch (err) {
      done(err as Error, undefined)
    }
  })

  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit }, (request, body, done) => {
    let parsed: unknown
    try {
      // RFC 8259 §8.1: JSON exchanged between systems is UTF-8, whatever the label says otherwise.
      checkLabels(request)
    } catch (err) {
      done(err as Error, undefined)
      return
    }
    try {
      parsed = JSON.parse(body as string)
    } catch {
      done(invalidRequest('malformed JSON body'), undefined)
      return
    }
    try {
      done(null, flatten(parsed, body as string))
    } catch (err) {
      done(err as Error, undefined)
    }
  })

  // Anything else (text/plain, multipart, garbage) is refused before it is read.
  app.addContentTypeParser('*', { bodyLimit }, (_request, _payload, done) => {
    done(invalidRequest('unsupported content type: use application/x-www-form-urlencoded or application/json'), undefined)
  })
}

/**
 * A compressed body is refused rather than inflated (no decompression bombs) or read as if it were
 * plain (RFC 9110 §8.4: a server must not ignore a content coding it does not apply).
 */
function checkEncoding (request: FastifyRequest): void {
  const enc = request.headers['content-encoding']
  if (enc !== undefined && enc.trim().toLowerCase() !== 'identity') throw invalidRequest('compressed bodies are not supported')
}

/** The body's labels: no content coding, and UTF-8 if a charset is given. */
function checkLabels (request: FastifyRequest): void {
  checkEncoding(request)
  const ct = request.headers['content-type'] ?? ''
  const m = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(ct)
  if (m?.[1] !== undefined && m[1].toLowerCase() !== 'utf-8' && m[1].toLowerCase() !== 'utf8') throw invalidRequest('only UTF-8 bodies are supported')
}

export function parseForm (body: string): Params {
  const out: Params = Object.create(null)
  if (body === '') return out
  for (const pair of body.split('&')) {
    if (pair === '') continue
    const eq = pair.indexOf('=')
    const rawKey = eq === -1 ? pair : pair.slice(0, eq)
    const rawValue = eq === -1 ? '' : pair.slice(eq + 1)
    let key: string, value: string
    try {
      key = decodeURIComponent(rawKey.replace(/\+/g, ' '))
      value = decodeURIComponent(rawValue.replace(/\+/g, ' '))
    } catch {
      throw invalidRequest('malformed form body')
    }
    checkName(key)
    if (Object.hasOwn(out, key)) throw invalidRequest(`${safeName(key)} parameter must not be provided twice`)
    out[key] = value
  }
  return out
}

/**
 * Array/object syntax (`grant_type[]`, `username[$ne]`, `__proto__[admin]`) is refused rather than
 * ignored as an unknown name: RFC 6749 parameters are flat name/value pairs (§3.2, Appendix B), and a
 * qs-style parser in front of Tokenline can then never turn one into something else.
 */
function checkName (key: string): void {
  if (key.includes('[') || key.includes(']')) throw invalidRequest('array and object parameter syntax is not supported')
}

/** A JSON string literal, escapes included. */
const JSON_STRING = /"(?:[^"\\]|\\.)*"/g

function flatten (parsed: unknown, raw: string): Params {
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw invalidRequest('JSON body must be an object')
  const out: Params = Object.create(null)
  const entries = Object.entries(parsed)
  for (const [key, value] of entries) {
    if (typeof value !== 'string') throw invalidRequest(`${safeName(key)} must be a string`)
    checkName(key)
    out[key] = value
  }
  // JSON.parse keeps the last of repeated keys silently. In a flat object of strings every key and
  // every value is one string literal, so fewer keys than half the literals means a key was repeated
  // (RFC 6749 §3.2: parameters MUST NOT be included more than once).
  if ((raw.match(JSON_STRING)?.length ?? 0) !== entries.length * 2) throw invalidRequest('a parameter must not be provided twice')
  return out
}

/** Parameter names are echoed in descriptions only when they are plain identifiers (RFC 6749 §5.2 charset). */
function safeName (key: string): string {
  return /^[a-z_]{1,32}$/.test(key) ? key : 'a'
}

/**
 * RFC 6749 §3.2: a parameter sent without a value is treated as omitted. Returns the body's
 * parameters, refusing any in the query string (credentials never belong in a URL).
 */
export function bodyParams (request: FastifyRequest): Params {
  const q = request.url.indexOf('?')
  if (q !== -1 && q < request.url.length - 1) throw invalidRequest('parameters must not be sent in the query string')
  const body = request.body as Params | undefined
  const out: Params = Object.create(null)
  if (body == null) return out
  for (const [k, v] of Object.entries(body)) if (v !== '') out[k] = v
  return out
}

export function required (params: Params, name: string): string {
  const v = params[name]
  if (v === undefined || v.trim() === '') throw invalidRequest(`missing required parameter ${name}`)
  return v
}
