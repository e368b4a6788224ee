import { invalidRequest } from '../errors.js'
import type { Params } from '../http/client-auth.js'

const DEVICE_ID = /^[\x21-\x7e]{1,128}$/

/** The optional `device_id` parameter: printable ASCII, at most 128 characters. */
export function deviceIdParam (params: Params): string | null {
  const v = params.device_id
  if (v === undefined) return null
  if (!DEVICE_ID.test(v)) throw invalidRequest('device_id must be 1 to 128 printable ASCII characters')
  return v
}
