import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto'

/**
 * Refresh tokens are opaque: `tlrt_` + 256 random bits (43 base64url chars) + a 6-char checksum.
 * The prefix makes leaked tokens easy to scan for; the checksum rejects garbage and typos before
 * the database is touched. Only the SHA-256 digest of the whole string is ever stored.
 */
export const REFRESH_PREFIX = 'tlrt_'
const BODY_LENGTH = 43
const CHECKSUM_LENGTH = 6
export const REFRESH_TOKEN_LENGTH = REFRESH_PREFIX.length + BODY_LENGTH + CHECKSUM_LENGTH
const SHAPE = /^tlrt_[A-Za-z0-9_-]{49}$/

function checksum (body: string): string {
  return createHash('sha256').update(REFRESH_PREFIX).update(body).digest().subarray(0, 4).toString('base64url')
}

export function newRefreshToken (): string {
  const body = randomBytes(32).toString('base64url')
  return REFRESH_PREFIX + body + checksum(body)
}

/** True when the string has the right shape and checksum; says nothing about whether it was issued. */
export function isWellFormedRefreshToken (token: string): boolean {
  if (token.length !== REFRESH_TOKEN_LENGTH || !SHAPE.test(token)) return false
  const body = token.slice(REFRESH_PREFIX.length, REFRESH_PREFIX.length + BODY_LENGTH)
  const given = Buffer.from(token.slice(-CHECKSUM_LENGTH))
  const want = Buffer.from(checksum(body))
  return timingSafeEqual(given, want)
}

/** The lookup key stored in the database. */
export function digest (token: string): Buffer {
  return createHash('sha256').update(token).digest()
}

/*
 * Grace replay: when the immediate parent is presented again inside the grace window, the caller must
 * get the *same* successor. Its plaintext is sealed (AES-256-GCM) under a key derived from the parent
 * token in a different hash domain than the stored digest, so only someone holding the parent can
 * open it — reading the database is not enough.
 */
function sealingKey (parent: string): Buffer {
  return createHash('sha256').update('tokenline grace v1\0').update(parent).digest()
}

export function sealSuccessor (parent: string, child: string): Buffer {
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', sealingKey(parent), iv)
  const sealed = Buffer.concat([cipher.update(child, 'utf8'), cipher.final()])
  return Buffer.concat([iv, cipher.getAuthTag(), sealed])
}

export function openSuccessor (parent: string, sealed: Buffer): string | undefined {
  try {
    const decipher = createDecipheriv('aes-256-gcm', sealingKey(parent), sealed.subarray(0, 12))
    decipher.setAuthTag(sealed.subarray(12, 28))
    return Buffer.concat([decipher.update(sealed.subarray(28)), decipher.final()]).toString('utf8')
  } catch {
    return undefined
  }
}

/** Random ids for sessions and JWT ids: 128 bits, base64url. */
export function randomId (): string {
  const id = randomBytes(16).toString('base64url')
  // Never a leading '-': `tokenline revoke --session <id>` would read such an id as an option.
  return id.startsWith('-') ? `A${id.slice(1)}` : id
}
