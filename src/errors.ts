/**
 * Every failure kvtc reports is a `KvtcError` with a stable string `code`, so callers can branch
 * on the kind of failure without parsing messages. Native failures arrive with the same codes.
 */
export type KvtcErrorCode =
  | 'E_LAYOUT' // a cache, layout or array does not have the shape it claims
  | 'E_OPTIONS' // an option has a bad type or value
  | 'E_PROFILE' // a profile file or buffer is malformed
  | 'E_PROFILE_MISMATCH' // a blob or cache was made for another profile / model shape
  | 'E_CORRUPT' // a blob or record failed its integrity checks
  | 'E_CAPACITY' // a size limit or an allocation failed
  | 'E_CLOSED' // the object was used after close()
  | 'E_BACKEND' // the requested backend is not usable
  | 'E_CALIBRATION' // calibration could not produce a profile (e.g. no usable samples)
  | 'E_IO' // a file could not be read or written
  | 'E_LOCKED' // another live process holds the store directory
  | 'E_INTERNAL'; // a bug: please report it

export class KvtcError extends Error {
  readonly code: KvtcErrorCode;

  constructor(code: KvtcErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KvtcError';
    this.code = code;
  }
}

const KNOWN_CODES = new Set<string>([
  'E_LAYOUT', 'E_OPTIONS', 'E_PROFILE', 'E_PROFILE_MISMATCH', 'E_CORRUPT', 'E_CAPACITY',
  'E_CLOSED', 'E_BACKEND', 'E_CALIBRATION', 'E_IO', 'E_LOCKED', 'E_INTERNAL',
]);

/** Converts anything thrown by the addon (an Error with a `code` property) into a KvtcError. */
export function toKvtcError(err: unknown): KvtcError {
  if (err instanceof KvtcError) return err;
  const e = err as { code?: unknown; message?: unknown } | undefined;
  const code = typeof e?.code === 'string' && KNOWN_CODES.has(e.code) ? (e.code as KvtcErrorCode) : 'E_INTERNAL';
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return new KvtcError(code, message, { cause: err });
}
