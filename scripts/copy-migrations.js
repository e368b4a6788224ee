// tsc does not copy .sql files; the build copies db/migrations next to the compiled store.
import { cpSync, mkdirSync } from 'node:fs'
mkdirSync('dist/db/migrations', { recursive: true })
cpSync('db/migrations', 'dist/db/migrations', { recursive: true })
