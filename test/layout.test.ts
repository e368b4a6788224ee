/*
 * The README's Layout section is the map a newcomer reads first: every folder it names exists, and
 * every folder of server/ and db/ is on it.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
const section = /## Layout\n\n```\n([\s\S]*?)```/.exec(readme)?.[1] ?? ''
const listed = section.split('\n').map((line) => /^(\S+\/)\s/.exec(line)?.[1]).filter((f): f is string => f !== undefined)

t.ok(listed.length > 0, 'the README has a Layout section listing folders')
for (const folder of listed) t.ok(statSync(join(ROOT, folder), { throwIfNoEntry: false })?.isDirectory(), `${folder} exists`)
for (const parent of ['server', 'db']) {
  for (const entry of readdirSync(join(ROOT, parent), { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name === 'migrations') continue
    const folder = `${parent}/${entry.name}/`
    const mentioned = listed.includes(folder) || section.includes(`${entry.name}/ (`)
    t.ok(mentioned, `${folder} is on the map`)
  }
}
