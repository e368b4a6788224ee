import { spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import t, { type Test } from 'tap'
import { PASSWORD } from './helpers.js'
import { ROOT, cleanEnv, tokenline } from './session-helpers.js'

/*
 * The README's sessions-API recipe runs as written: the block between the sessions-curl markers is
 * executed by bash, with real curl and `npx tokenline`, against the real standalone server (dist/), and
 * its stdout must be exactly the `# ...` lines that follow the commands in the README.
 */

const README = readFileSync(join(ROOT, 'README.md'), 'utf8')

function block (name: string): string {
  const m = new RegExp(`<!-- ${name}:start -->\\n\`\`\`sh\\n([\\s\\S]*?)\`\`\`\\n<!-- ${name}:end -->`).exec(README)
  if (m?.[1] === undefined) throw new Error(`README has no ${name} block`)
  return m[1]
}

/** The comment lines that directly follow a command (or another expected line) are its output. */
function expectedOutput (script: string): string[] {
  const out: string[] = []
  let afterCommand = false
  for (const line of script.split('\n')) {
    if (line.startsWith('# ') || line === '#') {
      if (afterCommand) out.push(line.slice(2))
      continue
    }
    afterCommand = line.trim() !== '' && !line.startsWith('  ') && line !== '}'
  }
  return out
}

/** The standalone server on an OS-assigned port; stopped at teardown. */
async function startServer (t: Test, env: Record<string, string>): Promise<number> {
  const child = spawn(process.execPath, [join(ROOT, 'dist', 'server', 'main.js')], {
    env: cleanEnv({ PORT: '0', HOST: '127.0.0.1', TOKENLINE_LOG_LEVEL: 'info', ...env }),
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  t.teardown(async () => { if (child.exitCode === null) child.kill('SIGTERM'); await exited })
  let out = ''
  return await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 30_000)
    const onData = (d: Buffer): void => {
      out += d.toString('utf8')
      const m = /Server listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(out)
      if (m?.[1] !== undefined) { clearTimeout(timer); resolve(Number(m[1])) }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    exited.then(() => { clearTimeout(timer); reject(new Error(`server exited:\n${out}`)) }, reject)
  })
}

const curl = spawnSync('curl', ['--version'], { encoding: 'utf8' })
const skip = curl.error !== undefined ? 'curl is not installed' : false

t.test('README: two devices, the sessions API, a replay and a logout, with curl', { skip }, async (t) => {
  const script = block('sessions-curl')
  const expected = expectedOutput(script)
  t.ok(expected.length >= 10, 'the recipe states its expected output')

  const dir = t.testdir({})
  const env = { TOKENLINE_DB: join(dir, 'tokenline.db') }
  const add = await tokenline(env.TOKENLINE_DB, ['user', 'add', 'alice'], `${PASSWORD}\n`)
  t.equal(add.code, 0, add.stderr)
  // The quick start's client for curl, with the quick start's command.
  t.match(README, /^npx tokenline client add cli --delivery body$/m)
  t.equal((await tokenline(env.TOKENLINE_DB, ['client', 'add', 'cli', '--delivery', 'body'])).code, 0)

  const port = await startServer(t, env)
  const run = script.replaceAll('localhost:3000', `localhost:${port}`)
  const result = await new Promise<{ code: number | null, stdout: string, stderr: string }>((resolve, reject) => {
    // In the project root, where `npx tokenline` finds this package's own bin.
    const child = spawn('bash', ['-s'], {
      cwd: ROOT,
      env: cleanEnv({ ...env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` }),
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
  // npm may warn about the machine's own npmrc; nothing else belongs on stderr.
  t.equal(result.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('npm warn')).join('\n'), '', 'nothing else on stderr')
})
