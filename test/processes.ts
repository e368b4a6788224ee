/*
 * Child-process helpers for tests that run the built CLI and servers as a user would (the standalone
 * server, or test/fixtures/server-process.mjs), and requests to those servers over real HTTP.
 * They run dist/ (npm test builds it first; when running tap directly, `npm run build` before).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { request, type IncomingHttpHeaders } from 'node:http'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { isPostgresUrl, openStore } from '../db/open.js'
import type { TokenBody } from './helpers.js'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
export const CLI = join(ROOT, 'bin', 'tokenline.js')
export const MAIN = join(ROOT, 'dist', 'server', 'standalone', 'main.js')
export const FIXTURE = join(ROOT, 'test', 'fixtures', 'server-process.mjs')

/** Cheap argon2 for the CLI and the server; password-grant.test.ts checks the production defaults. */
export const CHEAP_ARGON2_ENV = { TOKENLINE_ARGON2_MEMORY: '1024', TOKENLINE_ARGON2_TIME: '1' }

function assertBuilt (): void {
  if (!existsSync(join(ROOT, 'dist', 'server', 'plugin.js'))) throw new Error('dist/ is missing: run npm run build first')
}

/**
 * The environment without any TOKENLINE_* / PORT / HOST the developer may have set, and without tap's
 * NODE_OPTIONS loaders (the children are the product, run as a user runs it), plus `extra`.
 */
export function cleanEnv (extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('TOKENLINE_') || k.startsWith('_TAPJS_') || k === 'NODE_OPTIONS' || k === 'PORT' || k === 'HOST') continue
    env[k] = v
  }
  return { ...env, ...extra }
}

/** A TCP port no one listens on right now, for a server that must know its port before it starts. */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const address = s.address()
      s.close(() => { typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port')) })
    })
  })
}

export interface Run { code: number | null, stdout: string, stderr: string }

/** Runs `command args` to completion with `input` on stdin, collecting its output. */
export async function run (command: string, args: string[], opts: { env: NodeJS.ProcessEnv, cwd: string, input: string }): Promise<Run> {
  return await new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: opts.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    child.stdin.on('error', () => {}) // the command may exit before reading stdin
    child.stdin.end(opts.input)
  })
}

/** Runs `node bin/tokenline.js ...args` to completion, with `input` on stdin. */
export async function runCli (args: string[], opts: { env: Record<string, string>, input?: string, cwd?: string }): Promise<Run> {
  assertBuilt()
  return await run(process.execPath, [CLI, ...args], { env: cleanEnv(opts.env), cwd: opts.cwd ?? ROOT, input: opts.input ?? '' })
}

/**
 * Creates and migrates the SQLite database `file` (nothing for a PostgreSQL URL) by opening the store
 * once, as the server's first start does: the CLI refuses a database that does not exist yet.
 */
export async function createDatabase (file: string): Promise<string> {
  if (!isPostgresUrl(file)) await (await openStore(file, { pgPoolSize: 1, pgStatementTimeoutMs: 5000 })).close()
  return file
}

/**
 * Creates user alice (password `password`) and the public body client `cli` with the CLI: one assertion
 * each that it exits 0. The database is created first if it does not exist, as a server's first start would.
 */
export async function addAliceAndCli (t: Test, env: Record<string, string>, password: string): Promise<void> {
  if (env.TOKENLINE_DB !== undefined) await createDatabase(env.TOKENLINE_DB)
  const user = await runCli(['user', 'add', 'alice'], { env, input: `${password}\n` })
  t.equal(user.code, 0, user.stderr)
  const client = await runCli(['client', 'add', 'cli', '--delivery', 'body'], { env })
  t.equal(client.code, 0, client.stderr)
}

export interface Server {
  /** e.g. http://127.0.0.1:41234 */
  url: string
  host: string
  port: number
  /** Everything the server wrote to stdout and stderr so far. */
  output: () => string
  /** Sends SIGTERM unless it has exited, and waits for the exit. */
  stop: () => Promise<void>
  /** For a test that signals the process itself. */
  child: ChildProcess
  /** Resolves with the exit status once the process has exited. */
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

/**
 * Starts `node dist/server/standalone/main.js` on an OS-assigned port (PORT=0) and waits for Fastify's
 * "Server listening at" log line, which says which port it got. Stopped with SIGTERM at teardown.
 */
export async function startServer (t: Test, env: Record<string, string>): Promise<Server> {
  const child = spawn(process.execPath, [MAIN], {
    env: cleanEnv({ PORT: '0', HOST: '127.0.0.1', TOKENLINE_LOG_LEVEL: 'info', ...env }),
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    await exited
  }
  t.teardown(stop)
  child.stdout.on('data', (d: Buffer) => { out += d.toString('utf8') })
  child.stderr.on('data', (d: Buffer) => { out += d.toString('utf8') })
  const url = await new Promise<string>((resolve, reject) => {
    // Generous: a box busy with other test files can take many seconds to start a process.
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 60_000)
    // Registered after the collectors, so `out` already holds the chunk; off once found, as the log grows.
    const onData = (): void => {
      const m = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(out)
      if (m?.[1] !== undefined) { clearTimeout(timer); child.stdout.off('data', onData); child.stderr.off('data', onData); resolve(m[1]) }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    exited.then(() => { clearTimeout(timer); reject(new Error(`server exited:\n${out}`)) }, reject)
  })
  const u = new URL(url)
  return { url, host: u.hostname, port: Number(u.port), output: () => out, stop, child, exited }
}

export interface Fixture {
  port: number
  /** http://127.0.0.1:<port> */
  url: string
  stderr: () => string
}

/**
 * Starts test/fixtures/server-process.mjs on `dbFile` (with `grace` as its reuseGrace, or the default)
 * and resolves once it printed its port. Killed at teardown.
 */
export async function startFixture (t: Test, dbFile: string, opts: { grace?: number, env?: Record<string, string> } = {}): Promise<Fixture> {
  assertBuilt()
  const args = opts.grace === undefined ? [FIXTURE, dbFile] : [FIXTURE, dbFile, String(opts.grace)]
  const child = spawn(process.execPath, args, { cwd: ROOT, env: cleanEnv(opts.env ?? {}), stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  })
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server process did not start:\n${stderr}`)), 30_000)
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d
      const m = /^(\d+)\n/.exec(stdout)
      if (m?.[1] !== undefined) { clearTimeout(timer); resolve(Number(m[1])) }
    })
    exited.then(() => { clearTimeout(timer); reject(new Error(`server process exited:\n${stderr}`)) }, reject)
  })
  return { port, url: `http://127.0.0.1:${port}`, stderr: () => stderr }
}

/** POSTs a form to a running server with fetch: the status, the headers, and the JSON body ({} when empty). */
export async function postForm<T = TokenBody> (url: string, params: Record<string, string>, headers: Record<string, string> = {}): Promise<{ status: number, headers: Headers, body: T, res: Response }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(params).toString() })
  const text = await res.text()
  return { status: res.status, headers: res.headers, body: (text === '' ? {} : JSON.parse(text)) as T, res }
}

export type Outcome =
  | { kind: 'response', status: number, headers: IncomingHttpHeaders, body: string }
  | { kind: 'cut', error: string }

export interface Sent {
  /** Resolves once the whole request has been handed to the kernel. */
  written: Promise<void>
  outcome: Promise<Outcome>
}

/**
 * POSTs a form on a fresh connection of its own (no keep-alive agent, so requests really run in
 * parallel), and reports either the complete response (status line, headers and a body as long as its
 * framing says) or how it was cut off. With `timeoutMs`, a response not complete by then is abandoned
 * and reported as cut off with the error `timeout`.
 */
export function sendForm (url: string, params: Record<string, string>, headers: Record<string, string> = {}, opts: { timeoutMs?: number } = {}): Sent {
  const body = new URLSearchParams(params).toString()
  let onWritten!: () => void
  const written = new Promise<void>((resolve) => { onWritten = resolve })
  const outcome = new Promise<Outcome>((resolve) => {
    const timer = opts.timeoutMs === undefined
      ? undefined
      : setTimeout(() => { resolve({ kind: 'cut', error: 'timeout' }); req.destroy() }, opts.timeoutMs)
    const req = request(url, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body), connection: 'close', ...headers }
    }, (res) => {
      let data = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { data += d })
      res.on('end', () => {
        // 'end' after 'aborted' would be a truncated body; complete means it ended normally.
        if (res.complete) resolve({ kind: 'response', status: res.statusCode ?? 0, headers: res.headers, body: data })
        else resolve({ kind: 'cut', error: 'response body truncated' })
      })
      res.on('error', (err) => resolve({ kind: 'cut', error: err.message }))
    })
    req.on('finish', onWritten)
    req.on('error', (err) => { onWritten(); resolve({ kind: 'cut', error: (err as NodeJS.ErrnoException).code ?? err.message }) })
    req.on('close', () => clearTimeout(timer))
    req.end(body)
  })
  return { written, outcome }
}

/** Runs `fn` over `items` with at most `limit` in flight, keeping the results in order. */
export async function mapLimit<T, R> (items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i] as T)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return out
}

/**
 * A fresh directory of its own under the OS temp dir, removed at teardown. Unlike t.testdir(), whose
 * path is derived from the test's name, two runs of the suite at once (or two calls in one test)
 * never share or wipe each other's database files.
 */
export function tempDir (t: Test, files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'tokenline-test-'))
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content)
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}
