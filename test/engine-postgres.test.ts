import t from 'tap'
import { sharedPostgres, skipWithoutPostgres } from './postgres.js'

/*
 * The in-process API tests again, on PostgreSQL: each file below runs as its own test process with
 * TOKENLINE_TEST_ENGINE=postgres, so test/helpers.ts gives every harness a fresh PostgreSQL database
 * on this file's server instead of a SQLite file. The same assertions, unchanged, hold on both
 * engines: rotation, the grace replay, lifetimes, revocation, introspection, the sessions API,
 * binding, cookies and keys behave the same whatever the store. (Files that also look inside the
 * SQLite file itself are not in the list.)
 */
const FILES = ['rotation', 'grace', 'lifetimes', 'revoke', 'introspect', 'sessions-api', 'binding', 'cookies', 'keys']

// Three at a time: each child is mostly waiting on its own server process and PostgreSQL.
t.jobs = 3
const server = await sharedPostgres()
if (server === undefined) skipWithoutPostgres(t)
else {
  for (const name of FILES) {
    // The same node flags as this process (tap's TypeScript loader), so the child runs the .ts file as tap would.
    t.spawn(process.execPath, [...process.execArgv, `test/${name}.test.ts`], {
      env: { ...process.env, TOKENLINE_TEST_ENGINE: 'postgres', TOKENLINE_TEST_PG_URL: server.adminUrl }
    }, `${name}.test.ts on PostgreSQL`)
  }
}
