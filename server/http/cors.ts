import cors from '@fastify/cors'
import type { FastifyInstance } from 'fastify'
import type { Tokenline } from '../context.js'

/** How long a browser may cache a preflight answer, s. */
const PREFLIGHT_MAX_AGE = 600

/**
 * CORS for Tokenline's routes (RFC 9700 §2.6; OWASP CSRF cheat sheet, "Custom Headers and CORS"):
 * credentials allowed, and only for the exact origins some client lists — never `*`, never a pattern.
 * The list is read from the database on each request, so a client added with the CLI while the server
 * runs takes effect at once. A foreign or missing Origin gets no CORS headers at all, and its preflight
 * is not answered; `Vary: Origin` is always sent because the answer depends on it.
 *
 * CORS only decides what a page may *read*. It stops nothing from being *sent*: a form POST is a
 * "simple" request with no preflight, which is why the cookie path also has its own CSRF check
 * (server/http/csrf.ts).
 */
export async function registerCors (child: FastifyInstance, tl: Tokenline): Promise<void> {
  // A host that already registered @fastify/cors above us owns the CORS policy; registering a second
  // copy would fight it (and fail on its request decorator).
  if (child.hasRequestDecorator('corsPreflightEnabled')) return
  await child.register(cors, {
    origin: async (origin: string | undefined) => origin !== undefined && await tl.store.originAllowed(origin),
    credentials: true,
    methods: ['GET', 'HEAD', 'POST', 'DELETE'],
    maxAge: PREFLIGHT_MAX_AGE,
    // An OPTIONS without Access-Control-Request-Method is answered like a preflight instead of with a
    // text/plain 400: every Tokenline answer stays JSON or empty.
    strictPreflight: false
  })
}
