// Baseline H for `npm run bench`: the smallest useful Fastify 5 app, `GET /` -> {"hello":"world"},
// serialised through a response schema like Tokenline's own routes. It runs in its own process
// (pinned like the Tokenline server) and prints its port as one JSON line once it listens.
import Fastify from 'fastify'

const app = Fastify({ logger: false })

app.get('/', {
  schema: {
    response: {
      200: { type: 'object', properties: { hello: { type: 'string' } } }
    }
  }
}, async () => ({ hello: 'world' }))

const close = () => { app.close().then(() => process.exit(0), () => process.exit(1)) }
process.once('SIGTERM', close)
process.once('SIGINT', close)

await app.listen({ port: 0, host: '127.0.0.1' })
process.stdout.write(JSON.stringify({ port: app.server.address().port }) + '\n')
