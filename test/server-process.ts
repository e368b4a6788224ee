/*
 * A standalone server child process whose exit the test controls and observes (shutdown and backup
 * tests), and a raw HTTP client that tells a complete response from a cut-off one.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { request } from 'node:http'
import type { Test } from 'tap'
import { MAIN, ROOT, cleanEnv } from './processes.js'

export interface Proc {
  child: ChildProcess
  url: string
  output: () => string
  /** Resolves with the exit status once the process has exited. */
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

export async function spawnServer (t: Test, env: Record<string, string>): Promise<Proc> {
  const child = spawn(process.execPath, [MAIN], {
    env: cleanEnv({ PORT: '0', HOST: '127.0.0.1', TOKENLINE_LOG_LEVEL: 'info', ...env }),
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString('utf8') })
  child.stderr.on('data', (d: Buffer) => { out += d.toString('utf8') })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  })
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 20_000)
    const onData = (): void => {
      const m = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(out)
      if (m?.[1] !== undefined) { clearTimeout(timer); child.stdout.off('data', onData); resolve(m[1]) }
    }
    child.stdout.on('data', onData)
    exited.then(() => { clearTimeout(timer); reject(new Error(`server exited:\n${out}`)) }, reject)
  })
  return { child, url, output: () => out, exited }
}

export type Outcome =
  | { kind: 'response', status: number, body: string }
  | { kind: 'cut', error: string }

export interface Sent {
  /** Resolves once the whole request has been handed to the kernel. */
  written: Promise<void>
  outcome: Promise<Outcome>
}

/**
 * POSTs a form on a fresh connection (no keep-alive), and reports either the complete response (status
 * line, headers and a body as long as its framing says) or how it was cut off.
 */
export function post (url: string, path: string, params: Record<string, string>): Sent {
  const body = new URLSearchParams(params).toString()
  let onWritten!: () => void
  const written = new Promise<void>((resolve) => { onWritten = resolve })
  const outcome = new Promise<Outcome>((resolve) => {
    const req = request(url + path, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body), connection: 'close' }
    }, (res) => {
      let data = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { data += d })
      res.on('end', () => {
        // 'end' after 'aborted' would be a truncated body; complete means it ended normally.
        if (res.complete) resolve({ kind: 'response', status: res.statusCode ?? 0, body: data })
        else resolve({ kind: 'cut', error: 'response body truncated' })
      })
      res.on('error', (err) => resolve({ kind: 'cut', error: err.message }))
    })
    req.on('finish', onWritten)
    req.on('error', (err) => { onWritten(); resolve({ kind: 'cut', error: (err as NodeJS.ErrnoException).code ?? err.message }) })
    req.end(body)
  })
  return { written, outcome }
}
