import t from 'tap'
import { freePort } from './processes.js'
import { sharedPostgres, skipWithoutPostgres } from './postgres.js'
import { expectedOutput, readmeBlock, runBash, skipWithoutCurl as skip } from './readme-recipes.js'

/*
 * The README's "Running several instances" recipe runs as written: two server processes (what `npm start` runs) on two
 * ports and one PostgreSQL database, a session started on one refreshed on the other, reuse detected
 * across them and a throttle spent on one honoured by the other, with real curl. Its stdout must be
 * exactly the `# ...` lines that follow the commands in the README.
 */

t.test('README: two instances on one PostgreSQL database', { skip }, async (t) => {
  const server = await sharedPostgres()
  if (server === undefined) return skipWithoutPostgres(t)
  const script = readmeBlock('instances')
  const expected = expectedOutput(script)
  t.ok(expected.length >= 4, 'the recipe states its expected output')

  const [a, b] = [await freePort(), await freePort()]
  const run = script.replaceAll('3001', String(a)).replaceAll('3002', String(b)).replaceAll('/tmp/tokenline-', `${t.testdir({})}/`)
  const env = { TOKENLINE_DB: await server.database(t) }
  const result = await runBash(run, { env })
  t.same(result.stdout.trimEnd().split('\n'), expected, `output as the README says\n${result.stderr}`)
  t.equal(result.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('npm warn')).join('\n'), '', 'nothing else on stderr')
  // The recipe's last line stops both servers: nothing may be left listening.
  for (const port of [a, b]) await t.rejects(fetch(`http://127.0.0.1:${port}/healthz`), `the instance on ${port} is gone`)
})
