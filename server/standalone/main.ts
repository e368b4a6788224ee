import { existsSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { pathToFileURL } from 'node:url'
import { isPostgresUrl } from '../../db/open.js'
import { buildServer, publicDir } from './app.js'
import { banner } from './banner.js'
import { ConfigError, fromEnv, serverOptions, settingByKey, unknownSettings } from '../options.js'

/** `npm start` / `tokenline serve`: read the environment, listen, and close cleanly on SIGTERM/SIGINT. */
export async function serve (env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let config
  let app
  let created = false
  try {
    config = fromEnv(env)
    const database = config.options.database ?? settingByKey('database').default as string
    // Asked before opening: opening a SQLite file creates it.
    created = !isPostgresUrl(database) && database !== ':memory:' && !existsSync(database)
    // The plugin validates again at register time (cross-field rules, the prefix): same exit status.
    app = await buildServer(serverOptions(config.options, config.server), config.server)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`tokenline: ${err.message}\n`)
      return 2
    }
    throw err
  }
  for (const warning of unknownSettings(env)) app.log.warn(warning)
  let closing = false
  const shutdown = (signal: string): void => {
    if (closing) return
    closing = true
    app.log.info({ signal }, 'shutting down: finishing in-flight requests')
    // close() stops accepting connections, waits for in-flight requests, then closes the database.
    app.close().then(() => process.exit(0), (err: unknown) => {
      app.log.error({ err }, 'error while closing')
      process.exit(1)
    })
  }
  process.once('SIGTERM', shutdown)
  process.once('SIGINT', shutdown)
  await app.listen({ port: config.server.port, host: config.server.host })
  // A person at a terminal gets a few plain lines; a process manager or a pipe gets the JSON log only.
  if (process.stdout.isTTY) {
    const tl = app.tokenline
    const { port } = app.server.address() as AddressInfo
    process.stdout.write(banner(
      { host: config.server.host, issuer: tl.opts.issuer, database: tl.opts.database },
      { port, created, kid: tl.currentKey.kid, alg: tl.currentKey.alg, demo: publicDir() !== undefined }
    ))
  }
  return 0
}

// Run when executed directly (npm start), not when imported by the CLI.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  serve().then((code) => { if (code !== 0) process.exit(code) }, (err: unknown) => {
    process.stderr.write(`tokenline: ${(err as Error).message}\n`)
    process.exit(1)
  })
}
