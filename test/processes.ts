/*
 * Child-process helpers for tests that run the built CLI and the standalone server as a user would.
 * They run dist/ (npm test builds it first; when running tap directly, `npm run build` before).
 */
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
export const CLI = join(ROOT, 'bin', 'tokenline.js')
export const MAIN = join(ROOT, 'dist', 'server', 'standalone', 'main.js')

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
  if (!existsSync(join(ROOT, 'dist', 'server', 'cli', 'index.js'))) throw new Error('dist/ is missing: run npm run build first')
  return await run(process.execPath, [CLI, ...args], { env: cleanEnv(opts.env), cwd: opts.cwd ?? ROOT, input: opts.input ?? '' })
}

export interface Server {
  /** e.g. http://127.0.0.1:41234 */
  url: string
  host: string
  port: number
  /** Everything the server wrote to stdout and stderr so far. */
  output: () => string
  stop: () => Promise<void>
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
  let exited = false
  const exit = new Promise<void>((resolve) => child.on('exit', () => { exited = true; resolve() }))
  const stop = async (): Promise<void> => {
    if (!exited) child.kill('SIGTERM')
    await exit
  }
  t.teardown(stop)
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 20_000)
    const onData = (d: Buffer): void => {
      out += d.toString('utf8')
      const m = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(out)
      if (m?.[1] !== undefined) { clearTimeout(timer); resolve(m[1]) }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    exit.then(() => { clearTimeout(timer); reject(new Error(`server exited:\n${out}`)) }, reject)
  })
  const u = new URL(url)
  return { url, host: u.hostname, port: Number(u.port), output: () => out, stop }
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
