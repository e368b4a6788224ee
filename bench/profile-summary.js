// Summarises a V8 .cpuprofile (from `BENCH_PROFILE=<dir> npm run bench`, which runs the server with
// `node --cpu-prof`): where the server's main thread spent its time, by package/file (self time),
// by function (self time) and by function including callees. Idle time is left out of the shares.
//
//   node bench/profile-summary.js <file.cpuprofile | dir> [--top N]
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const args = process.argv.slice(2)
const topIdx = args.indexOf('--top')
const TOP = topIdx === -1 ? 25 : Number(args.splice(topIdx, 2)[1])
let target = args[0]
if (target === undefined) {
  process.stderr.write('usage: node bench/profile-summary.js <file.cpuprofile | dir> [--top N]\n')
  process.exit(2)
}
if (statSync(target).isDirectory()) {
  // The newest profile in the directory.
  const files = readdirSync(target).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(target, f))
  if (files.length === 0) { process.stderr.write(`no .cpuprofile in ${target}\n`); process.exit(1) }
  target = files.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0]
}
const profile = JSON.parse(readFileSync(target, 'utf8'))

const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const parent = new Map()
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)

function where (url) {
  if (url === '') return ''
  const path = url.startsWith('file://') ? fileURLToPath(url) : url
  const nm = path.lastIndexOf('node_modules/')
  if (nm !== -1) {
    const rest = path.slice(nm + 'node_modules/'.length).split('/')
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]
  }
  if (path.startsWith('node:')) return 'node:' + path.slice(5).split('/')[0]
  return path.startsWith(ROOT) ? relative(ROOT, path) : path
}
const frameKey = (n) => {
  const f = n.callFrame
  const name = f.functionName || '(anonymous)'
  const loc = where(f.url)
  return loc === '' ? name : `${name}  ${loc}:${f.lineNumber + 1}`
}
const category = (n) => {
  const f = n.callFrame
  if (f.url === '') return f.functionName.startsWith('(') ? f.functionName : '(native/builtin)'
  return where(f.url)
}

const self = new Map()
const cat = new Map()
const inclusive = new Map()
let total = 0
let idle = 0
const add = (m, k, v) => m.set(k, (m.get(k) ?? 0) + v)
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i] ?? 0
  const node = byId.get(profile.samples[i])
  if (node === undefined) continue
  if (node.callFrame.functionName === '(idle)') { idle += dt; continue }
  total += dt
  add(self, frameKey(node), dt)
  add(cat, category(node), dt)
  const seen = new Set()
  for (let id = node.id; id !== undefined; id = parent.get(id)) {
    const k = frameKey(byId.get(id))
    if (!seen.has(k)) { seen.add(k); add(inclusive, k, dt) }
  }
}

const pct = (v) => `${((100 * v) / total).toFixed(1).padStart(5)}%`
const ms = (v) => `${(v / 1000).toFixed(0).padStart(7)} ms`
const print = (title, m, n = TOP, skip = () => false) => {
  console.log(`\n${title}`)
  for (const [k, v] of [...m].filter(([k]) => !skip(k)).sort((a, b) => b[1] - a[1]).slice(0, n)) console.log(`${pct(v)} ${ms(v)}  ${k}`)
}
console.log(`${target}\nbusy ${(total / 1e6).toFixed(2)} s, idle ${(idle / 1e6).toFixed(2)} s (${((100 * idle) / (idle + total)).toFixed(1)}% idle)`)
print('self time by package / file', cat, TOP)
print('self time by function', self, TOP)
print('inclusive time by function', inclusive, TOP, (k) => k.startsWith('(root)') || k.startsWith('(program)'))
