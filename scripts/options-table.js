// Rewrites the README's options table from the SETTINGS table in the built dist/server/options.js,
// between the <!-- options:start --> and <!-- options:end --> markers.
//   node scripts/options-table.js           rewrite README.md
//   node scripts/options-table.js --check   exit 1 if README.md is out of date (nothing written)
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const readme = `${root}README.md`
const START = '<!-- options:start -->'
const END = '<!-- options:end -->'

let optionsTable
try {
  ({ optionsTable } = await import(new URL('../dist/server/options.js', import.meta.url)))
} catch {
  process.stderr.write('options-table: dist/server/options.js is missing: run npm run build first\n')
  process.exit(2)
}

/** README text with the block between the markers replaced by `table`. */
function withTable (text, table) {
  const a = text.indexOf(START)
  const b = text.indexOf(END)
  if (a === -1 || b === -1 || b < a) throw new Error(`README.md has no ${START} ... ${END} block`)
  return text.slice(0, a + START.length) + '\n' + table + text.slice(b)
}

const current = readFileSync(readme, 'utf8')
const next = withTable(current, optionsTable())
if (process.argv.includes('--check')) {
  if (next !== current) {
    process.stderr.write('options-table: README.md options table is out of date: run npm run build && node scripts/options-table.js\n')
    process.exit(1)
  }
} else if (next !== current) {
  writeFileSync(readme, next)
  process.stdout.write('README.md options table updated\n')
} else {
  process.stdout.write('README.md options table already up to date\n')
}
