/**
 * The kvtc demo: multi-turn story sessions with the real stories260K model (node-llama-cpp on
 * the CPU) kept in a KvStore with a small hot tier, so sessions are demoted, spilled and
 * restored between turns instead of being recomputed. Prints live progress and a final table;
 * leaves its store on disk so a second run shows a warm restart.
 *
 *   npm run demo [-- --quick] [--sessions N] [--turns N] [--store DIR] [--model FILE]
 *   kvtc demo [same options]
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { LlamaContextSequence, LlamaModel, Token } from 'node-llama-cpp';
import { CodecProfile } from '../codec/profile.js';
import { KvStore, type StoreEvent } from '../store/store.js';
import type { Tier } from '../store/session.js';
import { calibrateFromModel, createContext } from '../adapters/llama-cpp/collect.js';
import { loadLlamaModel, modelKvLayout } from '../adapters/llama-cpp/model.js';
import { restoreSequence, saveSequence } from '../adapters/llama-cpp/session.js';
import { compareDistributions, greedyContinue, nextTokenDistributions } from '../adapters/llama-cpp/fidelity.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CONTEXT = 1024;

/** Options of the demo (flags of `npm run demo` / `kvtc demo`). */
export interface DemoOptions {
  quick?: boolean;
  sessions?: number;
  turns?: number;
  /** Directory of the demo's profile and store. Default .kvtc/demo. */
  store?: string;
  /** GGUF model. Default $KVTC_DEMO_MODEL, else ../shared/models/stories260K.gguf beside the package. */
  model?: string;
  /** Story openings, one per line. Default ../shared/data/prompts.txt beside the package. */
  prompts?: string;
}

let args: Required<Omit<DemoOptions, 'sessions' | 'turns'>>;
let SESSIONS = 24;
let TURNS = 3;
const GENERATE = 48; // tokens the model writes per turn
const FOLLOW_UPS = [' Then', ' One day,', ' But', ' So', ' After that,', ' The next day,'];

const fmtBytes = (b: number) => (b >= 1e6 ? `${(b / 1e6).toFixed(2)} MB` : `${(b / 1e3).toFixed(1)} kB`);
const median = (xs: number[]) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!.toFixed(2) : '-');

async function generate(seq: LlamaContextSequence, input: Token[], n: number): Promise<Token[]> {
  const out: Token[] = [];
  for await (const t of seq.evaluate(input, { temperature: 0 })) {
    out.push(t);
    if (out.length >= n) break;
  }
  return out;
}

/** Runs the demo; rejects on failure. */
export async function runDemo(options: DemoOptions = {}): Promise<void> {
  args = {
    quick: options.quick ?? false,
    store: options.store ?? '.kvtc/demo',
    model: options.model ?? process.env.KVTC_DEMO_MODEL ?? resolve(ROOT, '../shared/models/stories260K.gguf'),
    prompts: options.prompts ?? resolve(ROOT, '../shared/data/prompts.txt'),
  };
  SESSIONS = options.sessions ?? (args.quick ? 8 : 24);
  TURNS = options.turns ?? (args.quick ? 2 : 3);
  const t0 = performance.now();
  if (!Number.isInteger(SESSIONS) || SESSIONS < 1 || !Number.isInteger(TURNS) || TURNS < 1) {
    throw new Error('--sessions and --turns must be positive integers');
  }
  const prompts = readFileSync(args.prompts, 'utf8').split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  const storeDir = resolve(args.store);
  mkdirSync(storeDir, { recursive: true });
  console.log(`kvtc demo: ${SESSIONS} story sessions x ${TURNS} turns with ${args.model.split('/').pop()}, store in ${storeDir}`);
  const { model, dispose } = await loadLlamaModel(args.model);
  try {
    await runSessions(model, prompts, storeDir);
  } finally {
    await dispose();
  }
  console.log(`\ndone in ${((performance.now() - t0) / 1000).toFixed(1)} s; run again to see the sessions come back from disk`);
}

async function runSessions(model: LlamaModel, prompts: string[], storeDir: string): Promise<void> {
  const layout = modelKvLayout(model);
  // Calibrate once per model (on prompts the sessions do not use) and keep the profile.
  const profilePath = join(storeDir, 'profile.kvtcp');
  let profile: CodecProfile;
  if (existsSync(profilePath)) {
    profile = await CodecProfile.load(profilePath);
    console.log(`profile ${profile.fingerprint.slice(0, 12)} loaded (ratio ${profile.settings.ratio})`);
  } else {
    const calib = prompts.slice(0, Math.min(16, prompts.length - SESSIONS));
    profile = await calibrateFromModel({
      model,
      prompts: calib,
      tokens: 256,
      onProgress: (done, total) => process.stdout.write(`\rcalibrating: ran ${done}/${total} prompts`),
      // A short recent window so the demo's short stories are mostly transform-coded.
      calibration: { ratio: 16, windowTokens: 16 },
    });
    await profile.save(profilePath);
    console.log(`\rcalibrated profile ${profile.fingerprint.slice(0, 12)} on ${calib.length} prompts (ratio 16, window 16)`);
  }

  const sessionBytes = 2 * layout.layers * 200 * layout.kvHeads * layout.headDim * 2; // a ~200-token f16 story
  const store = await KvStore.open({
    profile,
    path: join(storeDir, 'sessions'),
    // Room for a handful of stories hot and a few more warm: the rest live on disk.
    tiers: { device: { capacityBytes: 4 * sessionBytes, idleMs: 0 }, host: { capacityBytes: Math.floor(0.6 * sessionBytes), idleMs: 0 } },
  });
  const moves: Record<string, number> = { demote: 0, spill: 0, promote: 0, corrupt: 0 };
  for (const e of ['demote', 'spill', 'promote', 'corrupt'] as const) store.on(e, (_: StoreEvent) => moves[e]!++);
  const ids = Array.from({ length: SESSIONS }, (_, i) => `story-${String(i).padStart(2, '0')}`);
  const found = ids.filter((id) => store.has(id));
  if (found.length) console.log(`warm restart: found ${found.length} of ${SESSIONS} sessions on ${store.has(found[0]!)} from the previous run`);
  else console.log('no sessions on disk yet: a fresh start');

  const restoreMs: Record<Tier, number[]> = { device: [], host: [], disk: [], remote: [] };
  const recomputeMs: number[] = [];
  let klSum = 0;
  let agree = 0;
  let compared = 0;
  let turnsDone = 0;
  const context = await createContext(model, CONTEXT, {});
  const refContext = await createContext(model, CONTEXT, {});
  try {
    const seq = context.getSequence();
    const ref = refContext.getSequence();
    for (let turn = 0; turn < TURNS; turn++) {
      for (const [i, id] of ids.entries()) {
        await seq.clearHistory();
        let t = performance.now();
        let restored = await restoreSequence(store, id, seq);
        if (restored && restored.tokens.length > CONTEXT - 3 * GENERATE) {
          // The story has filled the context over earlier runs: start it again.
          await store.delete(id);
          await seq.clearHistory();
          restored = undefined;
        }
        let line: string;
        if (restored) {
          const ms = performance.now() - t;
          restoreMs[restored.tier].push(ms);
          // The alternative: recompute the whole prefix from its tokens.
          await ref.clearHistory();
          const tokens = [...seq.contextTokens];
          t = performance.now();
          await ref.evaluateWithoutGeneratingNewTokens(tokens);
          const recompute = performance.now() - t;
          recomputeMs.push(recompute);
          // Fidelity, teacher-forced: the exact (recomputed) sequence writes the next turn greedily;
          // the restored one reads the same tokens, and their next-token distributions are compared.
          const followUp = model.tokenize(FOLLOW_UPS[(turn + i) % FOLLOW_UPS.length]!);
          await ref.evaluateWithoutGeneratingNewTokens(followUp.slice(0, -1));
          await seq.evaluateWithoutGeneratingNewTokens(followUp.slice(0, -1));
          const reference = await greedyContinue(ref, followUp.at(-1)!, GENERATE);
          const mine = await nextTokenDistributions(seq, [followUp.at(-1)!, ...reference.tokens.slice(0, -1)]);
          const cmp = compareDistributions(reference.probs, mine);
          klSum += cmp.meanKl * cmp.steps;
          agree += cmp.top1Agreement * cmp.steps;
          compared += cmp.steps;
          line = `restored ${String(tokens.length).padStart(3)} tokens from ${restored.tier.padEnd(6)} in ${ms.toFixed(1).padStart(5)} ms (recompute ${recompute.toFixed(1).padStart(5)} ms); next turn: top-1 ${(100 * cmp.top1Agreement).toFixed(0).padStart(3)}%, KL ${cmp.meanKl.toExponential(1)}`;
        } else {
          await generate(seq, [model.tokens.bos!, ...model.tokenize(prompts[prompts.length - 1 - i]!)], GENERATE);
          line = `new story, ${seq.contextTokens.length} tokens`;
        }
        await saveSequence(store, id, seq, layout);
        turnsDone++;
        console.log(`turn ${turn + 1}/${TURNS}  ${id}  ${line}`);
      }
    }
  } finally {
    await context.dispose();
    await refContext.dispose();
  }

  const s = store.stats();
  console.log('\n| tier | sessions | raw | stored | ratio | restore p50 (ms) | restores |');
  console.log('|---|---|---|---|---|---|---|');
  for (const tier of ['device', 'host', 'disk'] as const) {
    const ts = s[tier];
    const ratio = ts.storedBytes ? (ts.rawBytes / ts.storedBytes).toFixed(1) : '-';
    console.log(`| ${tier} | ${ts.entries} | ${fmtBytes(ts.rawBytes)} | ${fmtBytes(ts.storedBytes)} | ${ratio} | ${median(restoreMs[tier])} | ${restoreMs[tier].length} |`);
  }
  console.log(`\nsessions ${SESSIONS}, turns ${turnsDone}; moves: ${moves.demote} demotions, ${moves.spill} spills, ${moves.promote} promotions, ${moves.corrupt} corrupt`);
  console.log(`compression of encoded sessions: ${s.meanRatio ? s.meanRatio.toFixed(1) : '-'}x vs their f16 caches`);
  console.log(`recompute of the same prefixes instead: p50 ${median(recomputeMs)} ms over ${recomputeMs.length} restores`);
  console.log(
    compared
      ? `fidelity (teacher-forced, ${compared} next-token steps after restores vs. an uncompressed recompute): top-1 agreement ${((100 * agree) / compared).toFixed(1)}%, mean KL ${(klSum / compared).toExponential(2)} nats`
      : 'fidelity: no restores in this run',
  );
  await store.close(); // flushes hot and warm sessions to disk for the next run
}

// Run directly (npm run demo): parse the flags here.
if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      sessions: { type: 'string' },
      turns: { type: 'string' },
      store: { type: 'string' },
      model: { type: 'string' },
      prompts: { type: 'string' },
    },
  });
  const opts: DemoOptions = { quick: values.quick ?? false };
  if (values.sessions) opts.sessions = Number(values.sessions);
  if (values.turns) opts.turns = Number(values.turns);
  if (values.store) opts.store = values.store;
  if (values.model) opts.model = values.model;
  if (values.prompts) opts.prompts = values.prompts;
  runDemo(opts).catch((err: unknown) => {
    console.error(err instanceof Error ? `${(err as { code?: string }).code ?? 'Error'}: ${err.message}` : err);
    process.exit(1);
  });
}
