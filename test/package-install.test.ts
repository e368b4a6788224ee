import { execFileSync } from 'node:child_process'
import { mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { cleanEnv, freePort, ROOT, run } from './processes.js'
import { expectedOutput, readmeBlock, runBash } from './readme-recipes.js'

/*
 * Depending on Tokenline as the README says: its `npm pack` recipe runs as written, and the tarball it
 * writes works when imported by name from another project (`import tokenline from 'tokenline'`),
 * registered in that project's Fastify app and serving tokens' metadata and health from a fresh
 * database. npm's own install step is not rerun here (it would fetch every dependency again, and compile
 * the native ones, on a machine with no network but the registry); the project's node_modules gets the
 * unpacked tarball as `tokenline` and this checkout's installed dependencies beside it, which is what
 * `npm install <tarball>` leaves behind.
 */

t.test('README: npm pack, then import tokenline from another project', async (t) => {
  const script = readmeBlock('depend')
  const dir = t.testdir({})
  // --ignore-scripts: `npm test` built dist/ already, and the pack's own build (prepare) would rewrite it
  // under the test files running beside this one.
  const result = await runBash(script.replace('npm pack --silent', `npm pack --silent --ignore-scripts --pack-destination ${dir}`), { env: {} })
  t.equal(result.code, 0, result.stderr)
  t.same(result.stdout.trim().split('\n').slice(-1), expectedOutput(script), 'prints the tarball\'s name, as the README says')
  const tarball = join(dir, expectedOutput(script)[0] as string)

  const project = join(dir, 'app')
  const modules = join(project, 'node_modules')
  mkdirSync(join(modules, 'tokenline'), { recursive: true })
  execFileSync('tar', ['-xzf', tarball, '-C', join(modules, 'tokenline'), '--strip-components=1'])
  for (const dep of readdirSync(join(ROOT, 'node_modules'))) {
    if (dep === '.bin' || dep === 'tokenline') continue
    symlinkSync(join(ROOT, 'node_modules', dep), join(modules, dep))
  }
  const port = await freePort()
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'my-api', type: 'module', private: true }))
  writeFileSync(join(project, 'server.mjs'), `
import Fastify from 'fastify'
import tokenline from 'tokenline'
const app = Fastify()
await app.register(tokenline, { database: './data/tokenline.db', issuer: 'http://localhost:${port}', prefix: '/auth' })
await app.listen({ port: ${port}, host: '127.0.0.1' })
const health = await (await fetch('http://127.0.0.1:${port}/auth/healthz')).json()
const meta = await (await fetch('http://127.0.0.1:${port}/auth/.well-known/oauth-authorization-server')).json()
console.log(JSON.stringify({ status: health.status, token_endpoint: meta.token_endpoint }))
await app.close()
`)
  const r = await run(process.execPath, ['server.mjs'], { env: cleanEnv({}), cwd: project, input: '' })
  t.equal(r.code, 0, r.stderr)
  t.same(JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}'), { status: 'ok', token_endpoint: `http://localhost:${port}/auth/token` },
    'the packed package registers, migrates a fresh database and serves under its prefix')
  rmSync(tarball)
})
