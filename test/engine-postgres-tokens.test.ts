/*
 * In-process API tests again, on PostgreSQL (see rerunOnPostgres in test/postgres.ts): the same
 * assertions, unchanged, hold on both engines. Split over three files so that each stays well inside
 * the per-file timeout on two cores. (Files that also look inside the SQLite file are not rerun.)
 */
import { rerunOnPostgres } from './postgres.js'

await rerunOnPostgres(['rotation', 'grace', 'lifetimes'])
