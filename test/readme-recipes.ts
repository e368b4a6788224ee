/*
 * The README's shell recipes, run as written by the tests that promise they work: a block between
 * `<!-- name:start -->` and `<!-- name:end -->` markers, its expected output (the `# ...` comment
 * lines that follow its commands), and bash to run it with real curl against the real server.
 */
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { cleanEnv, ROOT, run, type Run } from './processes.js'

export const README = readFileSync(join(ROOT, 'README.md'), 'utf8')

/** The shell code between the block's markers, without its ``` fence. */
export function readmeBlock (name: string): string {
  const m = new RegExp(`<!-- ${name}:start -->\\n\`\`\`sh\\n([\\s\\S]*?)\`\`\`\\n<!-- ${name}:end -->`).exec(README)
  if (m?.[1] === undefined) throw new Error(`README has no ${name} block`)
  return m[1]
}

/**
 * Expected output: the comment lines that directly follow a command (or another expected line).
 * A comment after a blank line, or at the start, explains the next command and is not output.
 */
export function expectedOutput (script: string): string[] {
  const out: string[] = []
  let afterCommand = false
  for (const line of script.split('\n')) {
    if (line.startsWith('# ') || line === '#') {
      if (afterCommand) out.push(line.slice(2))
      continue
    }
    afterCommand = line.trim() !== ''
  }
  return out
}

/** Why a recipe test is skipped, or false: the recipes need curl. */
export const skipWithoutCurl: string | false = spawnSync('curl', ['--version']).error === undefined
  ? false
  : 'curl is not installed: the README recipes cannot be run'

/**
 * Runs a script with bash, as a user pasting it would: on stdin, with this node first on PATH (the
 * recipes' json helper and npx), and none of the developer's TOKENLINE_* settings.
 */
export async function runBash (script: string, opts: { env: Record<string, string>, cwd?: string }): Promise<Run> {
  const env = cleanEnv({ ...opts.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` })
  return await run('bash', ['-s'], { env, cwd: opts.cwd ?? ROOT, input: script })
}
