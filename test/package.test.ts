/*
 * What package.json promises about where Tokenline runs, held against what its runtime dependencies
 * declare, and the licence it names.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import t from 'tap'
import { ROOT } from './processes.js'

const require = createRequire(import.meta.url)
// semver comes with npm's own tooling in node_modules; only its `satisfies` is needed.
const semver = require('semver') as { satisfies: (version: string, range: string) => boolean }

interface Manifest { engines?: { node?: string }, dependencies?: Record<string, string>, license?: string }
const manifest = (path: string): Manifest => JSON.parse(readFileSync(path, 'utf8')) as Manifest

t.test('engines.node allows no Node version a runtime dependency refuses, and every one they all accept', async (t) => {
  const own = manifest(join(ROOT, 'package.json'))
  const range = own.engines?.node ?? ''
  t.not(range, '', 'package.json states engines.node')
  const deps = Object.keys(own.dependencies ?? {}).map((name) => ({ name, range: manifest(join(ROOT, 'node_modules', name, 'package.json')).engines?.node }))
  t.ok(deps.some((d) => d.name === 'better-sqlite3' && d.range !== undefined), 'better-sqlite3 states its Node versions')
  // Majors up to the newest one a dependency names; each at its first and a late release.
  for (let major = 16; major <= 26; major++) {
    for (const version of [`${major}.0.0`, `${major}.20.0`]) {
      const accepted = deps.every((d) => d.range === undefined || semver.satisfies(version, d.range))
      t.equal(semver.satisfies(version, range), accepted, `Node ${version}: ${accepted ? 'accepted' : `refused by ${deps.filter((d) => d.range !== undefined && !semver.satisfies(version, d.range)).map((d) => d.name).join(', ')}`}`)
    }
  }
})

t.test('LICENSE: the MIT licence package.json names, for Tokenline contributors', async (t) => {
  t.equal(manifest(join(ROOT, 'package.json')).license, 'MIT')
  const text = readFileSync(join(ROOT, 'LICENSE'), 'utf8')
  t.match(text, /^MIT License\n\nCopyright \(c\) 2026 Tokenline contributors\n/)
  t.match(text, /THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND/)
})
