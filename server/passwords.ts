import argon2 from 'argon2'
import type { Argon2Params } from './options.js'

/** Longest password accepted, in characters; longer ones are refused before any hashing. */
export const MAX_PASSWORD = 1024
export const MAX_USERNAME = 256

export interface Passwords {
  hash: (password: string) => Promise<string>
  /** Verifies against the stored hash; with `undefined` it verifies against a dummy hash of the same cost. */
  verify: (hash: string | undefined, password: string) => Promise<boolean>
  needsRehash: (hash: string) => boolean
}

/**
 * argon2id with explicit parameters (node-argon2's own defaults cost 5× OWASP's minimum and use
 * 4 threads per hash). Unknown users are verified against a dummy hash made with the same
 * parameters, so they cost the same time as a wrong password.
 */
export function createPasswords (params: Argon2Params): Passwords {
  const options = { type: argon2.argon2id, memoryCost: params.memoryCost, timeCost: params.timeCost, parallelism: params.parallelism }
  let dummy: Promise<string> | undefined
  const hash = (password: string): Promise<string> => argon2.hash(password, options)
  return {
    hash,
    async verify (stored, password) {
      dummy ??= hash('tokenline dummy password, never matches')
      const target = stored ?? await dummy
      try {
        const ok = await argon2.verify(target, password)
        return ok && stored !== undefined
      } catch {
        // A corrupt stored hash must not become a 500; it is a failed login.
        return false
      }
    },
    needsRehash: (stored) => argon2.needsRehash(stored, options)
  }
}

/** Usernames are compared after NFC normalisation, trimming and lower-casing. */
export function normaliseUsername (username: string): string {
  return username.normalize('NFC').trim().toLowerCase()
}
