// Hand-written because p-limit and p-queue queue without bound and @fastify/under-pressure sheds the whole server by event-loop load; this caps argon2 alone, with a bounded wait and a 503 (RFC 9110 §15.6.4).
import { OAuthError } from '../errors.js'

/*
 * A semaphore in front of argon2. Each hash holds its memory parameter m, in KiB (RFC 9106 §3.1;
 * 19 MiB at OWASP parameters), and a libuv threadpool thread for tens of milliseconds; without a cap,
 * a login storm fills the threadpool (4 threads by default), so fs and async crypto queue behind it,
 * and memory grows with every request in flight. With the cap, at most `concurrency` hashes run, a
 * short queue absorbs bursts, and the rest are refused at once with 503 + Retry-After (RFC 9110
 * §15.6.4) instead of timing out. Refreshes never touch argon2 and so never wait here.
 */

/** Waiters allowed per slot: enough to smooth a burst, few enough that each waits a few hashes at most. */
export const QUEUE_PER_SLOT = 2

/** Thrown when no slot is free and the queue is full, or a waiter waited too long. */
export class Argon2Busy extends OAuthError {
  constructor () {
    super('temporarily_unavailable', 'too many logins in progress, retry later', { headers: { 'retry-after': '1' } })
  }
}

export interface Gate {
  /** Runs `fn` when a slot is free; throws Argon2Busy instead of waiting past the bound. */
  run: <T>(fn: () => Promise<T>) => Promise<T>
  readonly active: number
  readonly queued: number
}

interface Waiter { go: () => void, timer: NodeJS.Timeout }

export function createGate ({ concurrency, maxWaitMs }: { concurrency: number, maxWaitMs: number }): Gate {
  const maxQueue = maxWaitMs === 0 ? 0 : concurrency * QUEUE_PER_SLOT
  const queue: Waiter[] = []
  let active = 0

  // A finished operation hands its slot straight to the next waiter, so `active` never dips and a
  // newcomer cannot overtake the queue.
  const release = (): void => {
    const next = queue.shift()
    if (next === undefined) { active--; return }
    clearTimeout(next.timer)
    next.go()
  }

  const acquire = async (): Promise<void> => {
    if (active < concurrency) { active++; return }
    if (queue.length >= maxQueue) throw new Argon2Busy()
    await new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        go: resolve,
        timer: setTimeout(() => {
          queue.splice(queue.indexOf(waiter), 1)
          reject(new Argon2Busy())
        }, maxWaitMs)
      }
      queue.push(waiter)
    })
  }

  return {
    async run (fn) {
      await acquire()
      try {
        return await fn()
      } finally {
        release()
      }
    },
    get active () { return active },
    get queued () { return queue.length }
  }
}
