/**
 * One error vocabulary: the TS list (src/errors.ts) and its C++ mirror (native/errors.h) agree,
 * and every code the native sources raise is in it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { KVTC_ERROR_CODES, KvtcError, checkKeys, invalidParameter, toKvtcError } from '../../src/errors.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const TS_CODES = Object.keys(KVTC_ERROR_CODES).sort();

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, encoding: 'utf8' })
    .filter((f) => /\.(cc|h|cu|cuh)$/.test(f))
    .map((f) => join(ROOT, dir, f));
}

describe('error vocabulary', () => {
  it('native/errors.h mirrors the TS list exactly', () => {
    const h = readFileSync(join(ROOT, 'native', 'errors.h'), 'utf8');
    const list = /kErrorCodes\[\]\s*=\s*\{([^}]*)\}/.exec(h)?.[1];
    expect(list, 'kErrorCodes in native/errors.h').toBeDefined();
    const cpp = [...list!.matchAll(/"(E_[A-Z_]+)"/g)].map((m) => m[1]).sort();
    expect(cpp).toEqual(TS_CODES);
  });

  it('every code native/ and cuda/ raise is a known one', () => {
    const used = new Set<string>();
    for (const f of [...sources('native'), ...sources('cuda')]) {
      for (const m of readFileSync(f, 'utf8').matchAll(/"(E_[A-Z_]+)"/g)) used.add(m[1]!);
    }
    expect(used.size).toBeGreaterThan(5);
    for (const c of used) expect(TS_CODES, c).toContain(c);
  });

  it('unknown codes from the addon become E_INTERNAL; known ones keep theirs', () => {
    expect(toKvtcError(Object.assign(new Error('x'), { code: 'E_CORRUPT' })).code).toBe('E_CORRUPT');
    expect(toKvtcError(Object.assign(new Error('x'), { code: 'ENOENT' })).code).toBe('E_INTERNAL');
    expect(toKvtcError(Object.assign(new Error('x'), { code: 'toString' })).code).toBe('E_INTERNAL');
  });

  it('invalidParameter and checkKeys name the field, what it must be and what it was', () => {
    const e = invalidParameter('options.tiers.host.capacityBytes', 'a positive integer', -1);
    expect(e).toBeInstanceOf(KvtcError);
    expect(e.code).toBe('E_OPTIONS');
    expect(e.message).toBe('options.tiers.host.capacityBytes must be a positive integer, got -1');
    expect(invalidParameter('x', 'a string', 'y'.repeat(100)).message).toContain("'yyyy");
    expect(() => checkKeys({ tier: {} }, ['tiers'], 'store options')).toThrow(/store options has no option 'tier'/);
  });
});
