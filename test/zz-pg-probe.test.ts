import t from 'tap'
import pg from 'pg'
import { postgres } from './postgres.js'
const s = await postgres(t)
if (s) {
  const url = await s.database()
  const c = new pg.Client({ connectionString: url }); await c.connect()
  const r = await c.query('select version()'); t.match(r.rows[0].version, /PostgreSQL 15/)
  await c.end()
}
