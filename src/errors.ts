/**
 * Every failure kvtc reports is a `KvtcError` with a stable string `code`, so callers can branch
 * on the kind of failure without parsing messages. Native failures arrive with the same codes.
 */
/**
 * Every code kvtc raises, and the one rule for which a mistake gets: a wrong argument or option
 * type or value is E_OPTIONS, a wrong shape E_LAYOUT, bad bytes E_CORRUPT, a disk fault E_IO.
 * The native addon raises the same strings (native/errors.h mirrors this list; a test checks it).
 */
export const KVTC_ERROR_CODES = {
  E_OPTIONS: 'an argument or option has a bad type or value',
  E_LAYOUT: 'a cache, layout or array does not have the shape it claims',
  E_PROFILE: 'a profile file or buffer is malformed',
  E_PROFILE_MISMATCH: 'a blob, record or cache was made for another profile / model',
  E_CORRUPT: 'a blob or record failed its integrity checks',
  E_CAPACITY: 'a size limit was reached or an allocation failed',
  E_CLOSED: 'the object was used after close()',
  E_BACKEND: 'the requested backend is not usable',
  E_CALIBRATION: 'calibration could not produce a profile (e.g. no usable samples)',
  E_IO: 'a file could not be read or written',
  E_LOCKED: 'another live process holds the store directory',
  E_INTERNAL: 'a bug: please report it',
} as const;

export type KvtcErrorCode = keyof typeof KVTC_ERROR_CODES;

export class KvtcError extends Error {
  readonly code: KvtcErrorCode;

  constructor(code: KvtcErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KvtcError';
    this.code = code;
  }
}

/** A short rendering of a value for messages: strings quoted and cut, objects by their class. */
export function describeValue(v: unknown): string {
  if (typeof v === 'string') return `'${v.length > 64 ? `${v.slice(0, 64)}…` : v}'`;
  if (Array.isArray(v)) return `[${v.slice(0, 8).map(describeValue).join(', ')}${v.length > 8 ? ', …' : ''}]`;
  if (typeof v === 'object' && v !== null) return v.constructor?.name ?? 'object';
  if (typeof v === 'symbol') return v.toString();
  return String(v);
}

/**
 * The error for a parameter that is not what it must be, naming the field, what it must be and
 * what it was: `invalidParameter('options.tiers.host.capacityBytes', 'a positive integer', -1)`
 * reads "options.tiers.host.capacityBytes must be a positive integer, got -1".
 */
export function invalidParameter(field: string, expected: string, got: unknown, code: KvtcErrorCode = 'E_OPTIONS'): KvtcError {
  return new KvtcError(code, `${field} must be ${expected}, got ${describeValue(got)}`);
}

/**
 * Rejects keys an options object does not have (a misspelt option would otherwise be silently
 * ignored): E_OPTIONS naming the key and the field.
 */
export function checkKeys(o: object, allowed: readonly string[], field: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) {
      throw new KvtcError('E_OPTIONS', `${field} has no option '${k}' (known: ${allowed.join(', ')})`);
    }
  }
}

/** Converts anything thrown by the addon (an Error with a `code` property) into a KvtcError. */
export function toKvtcError(err: unknown): KvtcError {
  if (err instanceof KvtcError) return err;
  const e = err as { code?: unknown; message?: unknown } | undefined;
  const code = typeof e?.code === 'string' && Object.hasOwn(KVTC_ERROR_CODES, e.code) ? (e.code as KvtcErrorCode) : 'E_INTERNAL';
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return new KvtcError(code, message, { cause: err });
}
