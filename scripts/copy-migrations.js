// tsc does not copy .sql files; the build copies each engine's migrations next to its compiled store.
import { cpSync, existsSync, mkdirSync } from 'node:fs'
for (const engine of ['sqlite', 'postgres']) {
  const from = `db/${engine}/migrations`
  if (!existsSync(from)) continue
  mkdirSync(`dist/${from}`, { recursive: true })
  cpSync(from, `dist/${from}`, { recursive: true })
}
