/*
 * The README's curl session runs as written: the Quick start's CLI commands create the user and the
 * client, the real standalone server (dist/) listens on a free port, and the block between the
 * curl-session markers is run by bash with real curl. Only `127.0.0.1:3000` is replaced. What the
 * block prints must be exactly the `# ...` expected-output lines that follow its commands.
 */
import { spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { cleanEnv, ROOT, startServer, tempDir } from './processes.js'

const README = readFileSync(join(ROOT, 'README.md'), 'utf8')

/** The shell code between `<!-- name:start -->` and `<!-- name:end -->`, without its ``` fence. */
function block (name: string): string {
  const m = new RegExp(`<!-- ${name}:start -->\\n\`\`\`sh\\n([\\s\\S]*?)\`\`\`\\n<!-- ${name}:end -->`).exec(README)
  if (m?.[1] === undefined) throw new Error(`README has no ${name} block`)
  return m[1]
}

/**
 * Expected output: the comment lines that directly follow a command (or another expected line).
 * A comment after a blank line, or at the start, explains the next command and is not output.
 */
function expectedOutput (script: string): string[] {
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

/** The Quick start's shell block that creates the user and the client for curl. */
function quickStartSetup (): string {
  const section = README.slice(README.indexOf('## Quick start'))
  const blocks = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] ?? '')
  const setup = blocks.find((b) => b.includes('npx tokenline user add'))
  if (setup === undefined) throw new Error('the Quick start does not create a user with npx tokenline')
  return setup
}

async function bash (script: string, env: Record<string, string>): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return await new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script], { cwd: ROOT, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

const hasCurl = spawnSync('curl', ['--version']).error === undefined
const skip = hasCurl ? false : 'curl is not installed: the README curl session cannot be run'

t.test('README: the curl session works as written', { skip }, async (t) => {
  const script = block('curl-session')
  t.match(script, /127\.0\.0\.1:3000/, 'the recipe talks to the default address')
  const expected = expectedOutput(script)
  t.ok(expected.length >= 4, 'the recipe states what it prints')
  t.notMatch(script, /\/dev\/stderr/, 'no /dev/stderr: it cannot be opened when stderr is a socket')

  const env = { TOKENLINE_DB: join(tempDir(t), 'tokenline.db'), npm_config_update_notifier: 'false' }
  // Exactly the Quick start's commands (npx tokenline, password piped on stdin), on the test's database.
  const setup = quickStartSetup()
  t.match(setup, /npx tokenline client add cli/, 'the Quick start creates the curl client')
  const created = await bash(setup, env)
  t.equal(created.code, 0, created.stderr)
  t.match(created.stdout, /created user alice/)
  t.match(created.stdout, /created public client cli \(delivery body\)/)

  const server = await startServer(t, env)
  const run = script.replaceAll('127.0.0.1:3000', `${server.host}:${server.port}`)
  const result = await bash(run, env)
  t.equal(result.code, 0, `the session runs to the end (stderr: ${result.stderr.slice(0, 500)})`)
  t.same(result.stdout.split('\n').filter((l) => l !== ''), expected, 'it prints exactly the expected lines, in order')

  t.equal(result.stderr, '', 'no command complained along the way')
  t.equal(expected[0], '900', 'the login line shows the "15-minute access token" the recipe promises')
})
