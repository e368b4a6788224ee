/*
 * The README's curl session runs as written: the real standalone server (dist/) starts on a free port
 * and creates the database, the Quick start's CLI commands create the user and the client, and the block between the
 * curl-session markers is run by bash with real curl. Only `127.0.0.1:3000` is replaced. What the
 * block prints must be exactly the `# ...` expected-output lines that follow its commands.
 */
import { join } from 'node:path'
import t from 'tap'
import { startServer, tempDir } from './processes.js'
import { README, expectedOutput, readmeBlock, runBash, skipWithoutCurl as skip } from './readme-recipes.js'

/** The Quick start's shell block that creates the user and the client for curl. */
function quickStartSetup (): string {
  const section = README.slice(README.indexOf('## Quick start'))
  const blocks = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] ?? '')
  const setup = blocks.find((b) => b.includes('npx tokenline user add'))
  if (setup === undefined) throw new Error('the Quick start does not create a user with npx tokenline')
  return setup
}

t.test('README: the curl session works as written', { skip }, async (t) => {
  const script = readmeBlock('curl-session')
  t.match(script, /127\.0\.0\.1:3000/, 'the recipe talks to the default address')
  const expected = expectedOutput(script)
  t.ok(expected.length >= 4, 'the recipe states what it prints')
  t.notMatch(script, /\/dev\/stderr/, 'no /dev/stderr: it cannot be opened when stderr is a socket')

  const env = { TOKENLINE_DB: join(tempDir(t), 'tokenline.db'), npm_config_update_notifier: 'false' }
  // Exactly the Quick start's commands (npx tokenline, password piped on stdin), on the test's database.
  const setup = quickStartSetup()
  t.match(setup, /npx tokenline client add cli/, 'the Quick start creates the curl client')
  const quickStart = README.slice(README.indexOf('## Quick start'))
  t.ok(quickStart.indexOf('npm start') < quickStart.indexOf('npx tokenline user add'), 'after starting the server, which creates the database')
  // In that order: the CLI refuses a database that does not exist yet.
  const server = await startServer(t, env)
  const created = await runBash(setup, { env })
  t.equal(created.code, 0, created.stderr)
  t.match(created.stdout, /created user alice/)
  t.match(created.stdout, /created client cli \(public, delivery body\)/)

  const run = script.replaceAll('127.0.0.1:3000', `${server.host}:${server.port}`)
  const result = await runBash(run, { env })
  t.equal(result.code, 0, `the session runs to the end (stderr: ${result.stderr.slice(0, 500)})`)
  t.same(result.stdout.split('\n').filter((l) => l !== ''), expected, 'it prints exactly the expected lines, in order')

  t.equal(result.stderr, '', 'no command complained along the way')
  t.equal(expected[0], '900', 'the login line shows the "15-minute access token" the recipe promises')
})
