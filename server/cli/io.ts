import { createInterface } from 'node:readline'

/** A one-line, user-facing failure: printed as `tokenline: <message>`, exit status `code`. */
export class CliError extends Error {
  constructor (message: string, readonly code = 1) {
    super(message)
    this.name = 'CliError'
  }
}

export interface Io {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean }
  stdout: NodeJS.WritableStream
  stderr: NodeJS.WritableStream
  env: NodeJS.ProcessEnv
}

export const defaultIo = (): Io => ({ stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env })

/**
 * Reads a password: the first line of stdin when it is a pipe, or a prompt without echo on a terminal.
 */
export async function readPassword (io: Io, prompt: string): Promise<string> {
  if (io.stdin.isTTY === true) return await promptHidden(io, prompt)
  const rl = createInterface({ input: io.stdin, terminal: false })
  const line = await new Promise<string | undefined>((resolve) => {
    rl.once('line', resolve)
    rl.once('close', () => resolve(undefined))
  })
  rl.close()
  if (line === undefined) throw new CliError('no password on standard input (pipe one line, or run on a terminal)')
  return line
}

async function promptHidden (io: Io, prompt: string): Promise<string> {
  io.stderr.write(prompt)
  const stdin = io.stdin as NodeJS.ReadStream
  stdin.setRawMode(true)
  stdin.resume()
  stdin.setEncoding('utf8')
  return await new Promise((resolve, reject) => {
    let value = ''
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') { done(); resolve(value); return }
        if (ch === '\u0003') { done(); reject(new CliError('cancelled', 130)); return }
        if (ch === '\u007f') value = value.slice(0, -1)
        else value += ch
      }
    }
    const done = (): void => {
      stdin.off('data', onData)
      stdin.setRawMode(false)
      stdin.pause()
      io.stderr.write('\n')
    }
    stdin.on('data', onData)
  })
}

/** `1 session`, `2 sessions`: counts in the messages, for nouns with a plain plural. */
export const plural = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? '' : 's'}`

export const iso = (ms: number | null): string => (ms === null ? '-' : new Date(ms).toISOString().replace('.000Z', 'Z'))

/** Fixed-width columns for terminal tables. */
export function table (rows: string[][]): string {
  if (rows.length === 0) return ''
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)))
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n'
}
