/*
 * The README's "Command line" listing and `tokenline help` (server/cli/index.ts) name the same
 * commands and subcommands.
 */
import { PassThrough } from 'node:stream'
import t from 'tap'
import { main } from '../server/cli/index.js'
import { README } from './readme-recipes.js'

/** "client add", "keys rotate", "user disable|enable", "serve": a command and its subcommand, if any. */
const commandOf = (rest: string): string => {
  const [name, sub] = rest.split(/\s+/)
  return sub !== undefined && /^[a-z|]+$/.test(sub) ? `${name ?? ''} ${sub}` : name ?? ''
}

t.test('the README lists exactly the commands tokenline help lists', async (t) => {
  const out = new PassThrough()
  let help = ''
  out.on('data', (d: Buffer) => { help += d.toString('utf8') })
  t.equal(await main(['help'], { stdin: new PassThrough(), stdout: out, stderr: new PassThrough(), env: {} }), 0)
  const fromHelp = help.split('\n').filter((l) => /^ {2}[a-z]/.test(l)).map((l) => commandOf(l.trim().split(/ {2,}/)[0] ?? ''))

  const section = README.slice(README.indexOf('## Command line'))
  const block = /```\n([\s\S]*?)```/.exec(section)?.[1] ?? ''
  const fromReadme = block.split('\n').filter((l) => l.startsWith('tokenline ')).map((l) => commandOf(l.slice('tokenline '.length)))

  t.ok(fromHelp.includes('client update') && fromHelp.includes('client remove'), 'help lists client update and remove')
  t.same([...fromReadme].sort(), [...fromHelp].sort(), 'the same commands, none missing on either side')
})
