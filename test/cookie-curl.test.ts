import t from 'tap'
import { join } from 'node:path'
import { PASSWORD } from './helpers.js'
import { runCli, startServer } from './processes.js'
import { README, expectedOutput, readmeBlock, runBash, skipWithoutCurl as skip } from './readme-recipes.js'

/*
 * The README's "cookie session with curl" runs as written: the block between the cookie-session
 * markers is executed by bash, with real curl and its cookie jar, against the real standalone server
 * (dist/), and its stdout must be exactly the `# ...` lines that follow the commands in the README.
 */

t.test('README: the cookie session with curl', { skip }, async (t) => {
  const script = readmeBlock('cookie-session')
  t.match(script, /http:\/\/localhost:3000\/token/, 'the recipe talks to localhost:3000')
  const expected = expectedOutput(script)
  t.ok(expected.length >= 8, 'the recipe states its expected output')

  const dir = t.testdir({})
  const env = { TOKENLINE_DB: join(dir, 'tokenline.db') }
  // As the Quick start: the server runs (and has created the database) before the CLI is used.
  const server = await startServer(t, env)
  const user = await runCli(['user', 'add', 'alice'], { env, input: `${PASSWORD}\n` })
  t.equal(user.code, 0, user.stderr)
  // The client the README creates just before the block, with the same command.
  const add = /^npx tokenline (client add jar --delivery cookie)$/m.exec(README)
  t.ok(add, 'the README creates the cookie client for curl, without --origin')
  const client = await runCli((add?.[1] ?? 'client add jar --delivery cookie').split(' '), { env })
  t.equal(client.code, 0, client.stderr)

  const run = script.replaceAll('localhost:3000', `localhost:${server.port}`)
  // In the test directory, so mktemp's jar lands there too.
  const result = await runBash(run, { cwd: dir, env: { ...env, TMPDIR: dir } })
  t.same(result.stdout.trimEnd().split('\n'), expected, `output as the README says\n${result.stderr}`)
  t.equal(result.stderr, '', 'nothing on stderr')
})
