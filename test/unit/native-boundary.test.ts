/**
 * The native boundary: only src/binding.ts loads the addon, and outside it only the test hooks in
 * src/internal touch the whole addon; every other module uses the facade of its concept.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

function modules(): string[] {
  return readdirSync(SRC, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts')).map((f) => join(SRC, f));
}

describe('native boundary', () => {
  it('nothing outside binding.ts and src/internal imports the whole addon or loads a .node file', () => {
    const offenders: string[] = [];
    for (const file of modules()) {
      const rel = relative(SRC, file);
      if (rel === 'binding.ts' || rel.startsWith('internal/')) continue;
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*'[./]*binding\.js'/g)) {
        if (/(^|[\s,])native([\s,]|$)/.test(m[1]!)) offenders.push(`${rel} imports native`);
      }
      if (/\.node['"`]/.test(text) || /createRequire/.test(text)) offenders.push(`${rel} loads an addon`);
    }
    expect(offenders).toEqual([]);
  });
});
