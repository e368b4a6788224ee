import { pathToFileURL } from 'node:url'
import { buildServer } from './app.js'
import { ConfigError, fromEnv, serverOptions, unknownSettings } from '../options.js'

/** `npm start` / `tokenline serve`: read the environment, listen, and close cleanly on SIGTERM/SIGINT. */
export async function serve (env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let config
  let app
  try {
    config = fromEnv(env)
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
  return 0
}

// Run when executed directly (npm start), not when imported by the CLI.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  serve().then((code) => { if (code !== 0) process.exit(code) }, (err: unknown) => {
    process.stderr.write(`tokenline: ${(err as Error).message}\n`)
    process.exit(1)
  })
}
