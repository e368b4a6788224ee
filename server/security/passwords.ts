import argon2 from 'argon2'
import type { Gate } from './argon2-gate.js'
import type { Argon2Params } from '../options.js'

/** Longest password accepted, in characters; longer ones are refused before any hashing. */
export const MAX_PASSWORD = 1024
export const MAX_USERNAME = 256

export interface Passwords {
  hash: (password: string) => Promise<string>
  /** Verifies against the stored hash; with `undefined` it verifies against a dummy hash of the same cost. */
  verify: (hash: string | undefined, password: string) => Promise<boolean>
  needsRehash: (hash: string) => boolean
  /** Makes the dummy hash now, so even the first unknown user after a start costs one verify. */
  prepare: () => Promise<void>
}

/**
 * argon2id with explicit parameters (node-argon2's own defaults cost 5× OWASP's minimum and use
 * 4 threads per hash). Unknown users are verified against a dummy hash made with the same
 * parameters, so they cost the same time as a wrong password. With a `gate` (the server's), every
 * hash and verify waits for one of its slots, and throws Argon2Busy when there is none to be had.
 */
export function createPasswords (params: Argon2Params, gate?: Gate): Passwords {
  const options = { type: argon2.argon2id, memoryCost: params.memoryCost, timeCost: params.timeCost, parallelism: params.parallelism }
  const limited = gate === undefined ? <T>(fn: () => Promise<T>): Promise<T> => fn() : gate.run
  let dummy: Promise<string> | undefined
  const rawHash = (password: string): Promise<string> => argon2.hash(password, options)
  return {
    hash: (password) => limited(() => rawHash(password)),
    verify: (stored, password) => limited(async () => {
      // Made inside the slot, once, by the first unknown user: never a second slot while holding one.
      dummy ??= rawHash('tokenline dummy password, never matches')
      const target = stored ?? await dummy
      try {
        const ok = await argon2.verify(target, password)
        return ok && stored !== undefined
      } catch {
        // A corrupt stored hash must not become a 500; it is a failed login.
        return false
      }
    }),
    needsRehash: (stored) => argon2.needsRehash(stored, options),
    async prepare () {
      dummy ??= rawHash('tokenline dummy password, never matches')
      await dummy
    }
  }
}

/** C0 controls and DEL: no account name holds one (`tokenline user add` refuses them), and PostgreSQL cannot store NUL. */
// eslint-disable-next-line no-control-regex
export const CONTROL_CHARACTERS = /[\x00-\x1f\x7f]/

/** Usernames are compared after NFC normalisation, trimming and lower-casing. */
export function normaliseUsername (username: string): string {
  return username.normalize('NFC').trim().toLowerCase()
}
