/**
 * Writes the benchmark report (report.md and the plots) from the results JSON in a directory:
 *   node --import tsx bench/report/write.ts bench/results
 * Development tooling: the plotting libraries are dev dependencies, never part of the package.
 */
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { writeReport } from './report.js';

const dir = resolve(process.argv[2] ?? 'bench/results');
mkdirSync(dir, { recursive: true });
const files = await writeReport(dir);
console.log(`report: ${files.join(', ')}`);
