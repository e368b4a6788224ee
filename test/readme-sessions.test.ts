import { join } from 'node:path'
import t from 'tap'
import { PASSWORD } from './helpers.js'
import { startServer } from './processes.js'
import { README, expectedOutput, readmeBlock, runBash, skipWithoutCurl as skip } from './readme-recipes.js'
import { tokenline } from './session-helpers.js'

/*
 * The README's sessions-API recipe runs as written: the block between the sessions-curl markers is
 * executed by bash, with real curl and `npx tokenline`, against the real standalone server (dist/), and
 * its stdout must be exactly the `# ...` lines that follow the commands in the README.
 */

t.test('README: two devices, the sessions API, a replay and a logout, with curl', { skip }, async (t) => {
  const script = readmeBlock('sessions-curl')
  const expected = expectedOutput(script)
  t.ok(expected.length >= 10, 'the recipe states its expected output')

  const dir = t.testdir({})
  const env = { TOKENLINE_DB: join(dir, 'tokenline.db') }
  // As the Quick start: the server runs (and has created the database) before the CLI is used.
  const server = await startServer(t, env)
  const add = await tokenline(env.TOKENLINE_DB, ['user', 'add', 'alice'], `${PASSWORD}\n`)
  t.equal(add.code, 0, add.stderr)
  // The quick start's client for curl, with the quick start's command.
  t.match(README, /^npx tokenline client add cli --delivery body$/m)
  t.equal((await tokenline(env.TOKENLINE_DB, ['client', 'add', 'cli', '--delivery', 'body'])).code, 0)

  const run = script.replaceAll('localhost:3000', `localhost:${server.port}`)
  // In the project root, where `npx tokenline` finds this package's own bin.
  const result = await runBash(run, { env })
  t.same(result.stdout.trimEnd().split('\n'), expected, `output as the README says\n${result.stderr}`)
  // npm may warn about the machine's own npmrc; nothing else belongs on stderr.
  t.equal(result.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('npm warn')).join('\n'), '', 'nothing else on stderr')
})
