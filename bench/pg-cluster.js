// A throwaway PostgreSQL cluster for `npm run bench` (BENCH_PG_URL names a running server instead):
// initdb in a temporary directory, on a free port, as the `postgres` OS user when run as root (initdb
// refuses root). Settings are the server's defaults but fsync, which a benchmark's data does not need:
// the figures are Tokenline's cost per request, not the disk's.
import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

function binDir () {
  const root = '/usr/lib/postgresql'
  if (!existsSync(root)) return undefined
  const v = readdirSync(root).filter((d) => existsSync(join(root, d, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a))[0]
  return v === undefined ? undefined : join(root, v, 'bin')
}

/** Starts a cluster on `port`; resolves with its admin URL and a stop(). Undefined when PostgreSQL is not installed. */
export function startCluster (port) {
  const bin = binDir()
  if (bin === undefined) return undefined
  const root = process.getuid?.() === 0
  const dir = mkdtempSync(join(tmpdir(), 'tokenline-bench-pg-'))
  const data = join(dir, 'data')
  const run = (cmd, args) => {
    const argv = root ? ['runuser', '-u', 'postgres', '--', join(bin, cmd), ...args] : [join(bin, cmd), ...args]
    const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', cwd: dir })
    if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr || r.stdout}`)
  }
  if (root) {
    chmodSync(dir, 0o700)
    chownSync(dir, Number(execFileSync('id', ['-u', 'postgres'])), Number(execFileSync('id', ['-g', 'postgres'])))
  }
  run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C'])
  run('pg_ctl', ['-D', data, '-l', join(dir, 'log'), '-w', '-o', `-c port=${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${dir} -c fsync=off -c max_connections=200`, 'start'])
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    stop () {
      try { run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']) } catch {}
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
