#!/usr/bin/env node
/**
 * The `kvtc` command line: calibrate, inspect, bench, demo, info.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import cliProgress from 'cli-progress';
import { CodecProfile } from '../codec/profile.js';
import { calibrate } from '../codec/calibrate.js';
import { inspect } from '../codec/codec.js';
import { buildInfo } from '../binding.js';
import { cudaUnavailableReason } from '../backend.js';
import { ByteReader } from '../bytes.js';
import { KvtcError } from '../errors.js';
import type { CalibrateOptions } from '../options.js';
import { DiskTier } from '../store/disk-tier.js';
import { profileSummary } from './summary.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function positiveNumber(name: string, min = 0) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= min) throw new InvalidArgumentError(`${name} must be a number > ${min}, got '${v}'`);
    return n;
  };
}
function positiveInt(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got '${v}'`);
    return n;
  };
}
function pcaGroup(v: string): number | 'all' | 'auto' {
  if (v === 'all' || v === 'auto') return v;
  return positiveInt('--pca-group')(v);
}

const program = new Command();
program.name('kvtc').description('KV cache transform coding: calibrate profiles, inspect blobs and stores, benchmark, demo').showHelpAfterError();

program
  .command('calibrate')
  .description('learn a codec profile from a GGUF model run on prompts (or from saved llama.cpp state files)')
  .option('--model <file>', 'GGUF model to run the prompts through')
  .option('--prompts <file>', 'prompts, one per line (with --model)')
  .option('--caches <dir>', 'directory of saved llama.cpp sequence-state files (instead of --model)')
  .option('--tokens <n>', 'tokens per calibration cache (prompt + generated)', positiveInt('--tokens'), 256)
  .option('--ratio <r>', 'target compression ratio vs fp16', positiveNumber('--ratio', 1), 16)
  .option('--pca-group <n>', "layers per PCA group: a number, 'all' or 'auto'", pcaGroup, 'auto' as const)
  .option('--window <n>', 'recent tokens kept losslessly', (v) => Number(v), 128)
  .option('--sinks <n>', 'leading tokens kept losslessly', (v) => Number(v), 4)
  .requiredOption('--out <file>', 'where to write the profile')
  .action(async (o: { model?: string; prompts?: string; caches?: string; tokens: number; ratio: number; pcaGroup: number | 'all' | 'auto'; window: number; sinks: number; out: string }) => {
    if (!o.model === !o.caches) throw new KvtcError('E_OPTIONS', 'give exactly one of --model (with --prompts) or --caches');
    const bar = new cliProgress.MultiBar(
      // Without a terminal (CI logs), print the bars every few seconds instead of redrawing them.
      { clearOnComplete: false, hideCursor: true, noTTYOutput: !process.stdout.isTTY, notTTYSchedule: 5000, format: ' {stage} |{bar}| {value}/{total}' },
      cliProgress.Presets.shades_classic,
    );
    const fit = bar.create(100, 0, { stage: 'fit      ' });
    const calibration: CalibrateOptions = {
      ratio: o.ratio,
      pcaGroupLayers: o.pcaGroup,
      windowTokens: o.window,
      sinkTokens: o.sinks,
      onProgress: (p) => {
        if (p.stage === 'fit') fit.update(Math.round(100 * p.fraction));
      },
    };
    let profile: CodecProfile;
    try {
      if (o.model) {
        if (!o.prompts) throw new KvtcError('E_OPTIONS', '--model needs --prompts');
        const prompts = readLines(o.prompts);
        const run = bar.create(prompts.length, 0, { stage: 'prompts  ' });
        const { calibrateFromModel } = await import('../adapters/llama-cpp/collect.js');
        profile = await calibrateFromModel({
          modelPath: mustExist(o.model, '--model'),
          prompts,
          tokens: o.tokens,
          onProgress: (done) => run.update(done),
          calibration,
        });
      } else {
        const { parseSequenceState } = await import('../adapters/llama-cpp/state.js');
        const dir = mustExist(o.caches!, '--caches');
        const files = readdirSync(dir).filter((f) => statSync(join(dir, f)).isFile()).sort();
        if (files.length === 0) throw new KvtcError('E_IO', `no state files in ${dir}`);
        const read = bar.create(files.length, 0, { stage: 'caches   ' });
        const caches = files.map((f, i) => {
          const s = parseSequenceState(new Uint8Array(readFileSync(join(dir, f))));
          read.update(i + 1);
          return s.cache;
        });
        profile = await calibrate(caches, calibration);
      }
    } finally {
      bar.stop();
    }
    await profile.save(o.out);
    console.log(`wrote ${o.out} (${(profile.byteLength / 1e6).toFixed(2)} MB)\n`);
    console.log(profileSummary(profile));
  });

program
  .command('inspect')
  .description("show a blob's header and sections, a profile's summary, or a store directory's sessions")
  .argument('<path>', 'a .kvtc blob, a .kvtcp profile, or a store directory')
  .action(async (path: string) => {
    mustExist(path, 'path');
    if (statSync(path).isDirectory()) return inspectStore(path);
    const bytes = new Uint8Array(readFileSync(path));
    // A file shorter than a magic number is no profile (inspect then reports it as a bad blob).
    const magic = bytes.length >= 4 ? new ByteReader(bytes, () => new KvtcError('E_CORRUPT', 'short file')).u32('magic') : 0;
    if (magic === 0x5054564b) {
      console.log(profileSummary(CodecProfile.fromBytes(bytes)));
      return;
    }
    const info = inspect(bytes, { verify: true });
    console.log(`kvtc blob: ${info.bytes} bytes, checksum OK, profile ${info.fingerprint}`);
    console.log(`layout: ${info.layers} layers x ${info.kvHeads} KV heads x ${info.headDim}, ${info.dtype}; ${info.tokens} tokens`);
    console.log(`lossless: ${info.sinkTokens} sink + ${info.windowTokens} window + ${info.escapedTokens} escaped tokens; positions ${info.contiguousPositions ? `${info.positionStart}..` : 'explicit'}`);
    console.log(`ratio vs fp16: ${info.ratio.toFixed(2)}x`);
    console.log('\n| section | mode | stored bytes | raw bytes |\n|---|---|---|---|');
    info.sections.forEach((s, i) => console.log(`| ${i === 0 ? 'raw tokens' : `coded ${i}`} | ${s.mode} | ${s.storedBytes} | ${s.rawBytes} |`));
  });

async function inspectStore(dir: string): Promise<void> {
  if (!existsSync(join(dir, 'data.mdb'))) throw new KvtcError('E_IO', `${dir} is not a kvtc store directory (no data.mdb)`);
  const disk = DiskTier.open({ path: dir, capacityBytes: Number.MAX_SAFE_INTEGER, mapSizeBytes: 64 * 1024 * 1024 });
  try {
    const list = disk.list();
    // Device and host tiers live in the serving process's memory; a directory holds the disk tier.
    console.log(`store ${dir}: ${list.length} sessions on disk, ${disk.bytes} bytes stored, ${disk.unreadable().length} unreadable, ${disk.quarantined().length} quarantined`);
    if (list.length === 0) return;
    console.log('\n| session | tier | tokens | raw bytes | stored bytes | ratio | format | last access |\n|---|---|---|---|---|---|---|---|');
    for (const m of list) {
      console.log(`| ${m.id} | disk | ${m.tokens} | ${m.rawBytes} | ${m.storedBytes} | ${(m.rawBytes / Math.max(1, m.storedBytes)).toFixed(2)} | ${m.format} | ${new Date(m.lastAccess).toISOString()} |`);
    }
  } finally {
    await disk.close();
  }
}

program
  .command('bench')
  .description('run the codec, fidelity and store benchmarks; write bench/results/*.json, report.md and plots (run from the kvtc repository)')
  .option('--quick', 'shorter runs (a few minutes on 2 cores)')
  .option('--only <name>', 'one of: codec, fidelity, store, gpu, report (gpu runs only when named)')
  .option('--results <dir>', 'results directory (default bench/results of the checkout)')
  .action(async (o: { quick?: boolean; only?: string; results?: string }) => {
    const all = ['codec', 'fidelity', 'store'];
    const named = [...all, 'gpu', 'report'];
    if (o.only && !named.includes(o.only)) throw new InvalidArgumentError(`--only must be one of ${named.join(', ')}`);
    const benches = o.only ? [...all, 'gpu'].filter((b) => b === o.only) : all;
    // The benchmarks, the report and its plotting libraries are development tooling of the source checkout.
    if (!existsSync(join(ROOT, 'bench', 'report', 'write.ts'))) {
      throw new KvtcError('E_IO', 'kvtc bench runs from a kvtc source checkout with its dev dependencies installed (bench/ is not part of the package)');
    }
    const tsx = (script: string, args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', script, ...args], { cwd: ROOT, stdio: 'inherit' });
    for (const b of benches) {
      console.log(`\n=== ${b} benchmark${o.quick ? ' (quick)' : ''} ===`);
      const r = tsx(join('bench', `${b}.bench.ts`), o.quick ? ['--quick'] : []);
      if (r.status !== 0) throw new KvtcError('E_INTERNAL', `${b} benchmark failed (exit ${r.status})`);
    }
    const dir = o.results ? resolve(o.results) : join(ROOT, 'bench', 'results');
    mkdirSync(dir, { recursive: true });
    const r = tsx(join('bench', 'report', 'write.ts'), [dir]);
    if (r.status !== 0) throw new KvtcError('E_INTERNAL', `the report could not be written (exit ${r.status})`);
  });

program
  .command('demo')
  .description('multi-turn stories with a real model through a kvtc store (the main demo)')
  .option('--quick', 'a shorter run')
  .option('--sessions <n>', 'story sessions', positiveInt('--sessions'))
  .option('--turns <n>', 'turns per session', positiveInt('--turns'))
  .option('--store <dir>', 'directory of the profile and the store', '.kvtc/demo')
  .option('--model <file>', 'GGUF model (default: stories260K beside the package)')
  .option('--prompts <file>', 'story openings, one per line')
  .action(async (o: { quick?: boolean; sessions?: number; turns?: number; store: string; model?: string; prompts?: string }) => {
    const { runDemo } = await import('./demo.js');
    const opts: Parameters<typeof runDemo>[0] = { quick: o.quick ?? false, store: o.store };
    if (o.sessions) opts.sessions = o.sessions;
    if (o.turns) opts.turns = o.turns;
    if (o.model) opts.model = mustExist(o.model, '--model');
    if (o.prompts) opts.prompts = mustExist(o.prompts, '--prompts');
    await runDemo(opts);
  });

program
  .command('info')
  .description('what this build of kvtc contains and which backend it would use (CUDA devices, GEMM paths, SIMD)')
  .action(() => {
    const b = buildInfo();
    const problem = cudaUnavailableReason();
    console.log(`cuda:       ${b.cuda ? 'compiled in' : 'not compiled in'}${b.cudaEmulated ? ' (CPU emulation, tests only)' : ''}`);
    console.log(`devices:    ${b.cudaDevices}${b.cudaReason ? ` (${b.cudaReason})` : ''}`);
    if (b.cudaGemm) console.log(`gpu gemm:   ${b.cudaGemm}`);
    console.log(`cpu linalg: ${b.linalg}${b.openblas ? ' (OpenBLAS)' : ''}; SIMD ${b.simd.join(', ') || 'none'}`);
    console.log(`backend:    'auto' runs on the ${problem === null ? 'cuda backend' : `cpu (${problem})`}`);
  });

function mustExist(path: string, what: string): string {
  if (!existsSync(path)) throw new KvtcError('E_IO', `${what}: no such file or directory: ${path}`);
  return resolve(path);
}

function readLines(path: string): string[] {
  const lines = readFileSync(mustExist(path, '--prompts'), 'utf8').split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  if (lines.length === 0) throw new KvtcError('E_OPTIONS', `--prompts: ${path} has no prompts`);
  return lines;
}

program.parseAsync(process.argv).catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  console.error(`kvtc: ${e.code && e.code.startsWith('E_') ? `${e.code}: ` : ''}${e.message ?? String(err)}`);
  process.exit(typeof e.code === 'string' && e.code.startsWith('E_') ? 2 : 1);
});
