import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { PASSWORD } from './helpers.js'
import { cleanEnv, ROOT, runCli, startServer } from './processes.js'

/*
 * The README's "cookie session with curl" runs as written: the block between the cookie-session
 * markers is executed by bash, with real curl and its cookie jar, against the real standalone server
 * (dist/), and its stdout must be exactly the `# ...` lines that follow the commands in the README.
 */

const README = readFileSync(join(ROOT, 'README.md'), 'utf8')

/** The shell code between the markers, without its ``` fence. */
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

const curl = spawnSync('curl', ['--version'], { encoding: 'utf8' })
const skip = curl.error !== undefined ? 'curl is not installed' : false

t.test('README: the cookie session with curl', { skip }, async (t) => {
  const script = block('cookie-session')
  t.match(script, /http:\/\/localhost:3000\/token/, 'the recipe talks to localhost:3000')
  const expected = expectedOutput(script)
  t.ok(expected.length >= 8, 'the recipe states its expected output')

  const dir = t.testdir({})
  const env = { TOKENLINE_DB: join(dir, 'tokenline.db') }
  const user = await runCli(['user', 'add', 'alice'], { env, input: `${PASSWORD}\n` })
  t.equal(user.code, 0, user.stderr)
  // The client the README creates just before the block, with the same command.
  const add = /^npx tokenline (client add jar --delivery cookie)$/m.exec(README)
  t.ok(add, 'the README creates the cookie client for curl, without --origin')
  const client = await runCli((add?.[1] ?? 'client add jar --delivery cookie').split(' '), { env })
  t.equal(client.code, 0, client.stderr)

  const server = await startServer(t, env)
  const run = script.replaceAll('localhost:3000', `localhost:${server.port}`)
  const result = await new Promise<{ code: number | null, stdout: string, stderr: string }>((resolve, reject) => {
    const child = spawn('bash', ['-s'], {
      cwd: dir,
      // node for the recipe's json helper; mktemp's jar inside the test directory.
      env: cleanEnv({ ...env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`, TMPDIR: dir }),
      stdio: ['pipe', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    child.stdin.end(run)
  })
  t.same(result.stdout.trimEnd().split('\n'), expected, `output as the README says\n${result.stderr}`)
  t.equal(result.stderr, '', 'nothing on stderr')
})
