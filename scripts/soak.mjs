#!/usr/bin/env node
// Soak: runs the reliability suite over and over with much larger trial counts (kill -9 trials,
// stress operations) until KVTC_SOAK_MINUTES (default 60) have passed or a run fails.
//   npm run soak            KVTC_SOAK_MINUTES=10 npm run soak
import { spawnSync } from 'node:child_process';

const minutes = Number(process.env.KVTC_SOAK_MINUTES ?? 60);
const end = Date.now() + minutes * 60_000;
const env = {
  ...process.env,
  KVTC_CRASH_TRIALS: process.env.KVTC_CRASH_TRIALS ?? '200',
  KVTC_STRESS_OPS: process.env.KVTC_STRESS_OPS ?? '40000',
  KVTC_ADVERSARIAL_RUNS: process.env.KVTC_ADVERSARIAL_RUNS ?? '2000',
};
let round = 0;
do {
  round++;
  console.log(`\nsoak round ${round} (crash trials ${env.KVTC_CRASH_TRIALS}, stress ops ${env.KVTC_STRESS_OPS})`);
  const r = spawnSync('npx', ['vitest', 'run', 'test/reliability', 'test/store/store-corrupt.test.ts'], { stdio: 'inherit', env });
  if (r.status !== 0) {
    console.error(`soak round ${round} failed`);
    process.exit(1);
  }
} while (Date.now() < end);
console.log(`soak: ${round} rounds passed in ${minutes} minutes`);
