/**
 * The benchmark report: reads bench/results/*.json and writes report.md plus SVG plots — the
 * rate–distortion curves (ratio vs relative MSE, and vs next-token KL) for kvtc, the paper's
 * pipeline, the baselines and the Gaussian bound, and encode/decode throughput bars.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type RdPoint, type ThroughputBar, rateDistortionSpec, renderSvg, svgToPng, throughputSpec } from './plots.js';

type Row = Record<string, string | number>;

function readJson(dir: string, name: string): Record<string, unknown> | undefined {
  const p = join(dir, name);
  return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>) : undefined;
}

function mdTable(rows: Row[]): string {
  if (rows.length === 0) return '';
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const fmt = (v: unknown) =>
    v === undefined ? '' : typeof v === 'number' ? (Number.isInteger(v) ? String(v) : Math.abs(v) < 0.01 || Math.abs(v) >= 1e5 ? v.toExponential(2) : v.toFixed(2)) : String(v);
  return [`| ${cols.join(' | ')} |`, `|${cols.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${cols.map((c) => fmt(r[c])).join(' | ')} |`)].join('\n');
}

/** Points of the relative-MSE plot from the codec benchmark's real-KV rows. */
export function rdPoints(rows: Row[]): RdPoint[] {
  const pts: RdPoint[] = [];
  const method = (m: string) =>
    m.startsWith('kvtc') && m.includes('rANS') ? 'kvtc (rANS)' : m.startsWith('paper') ? "paper's pipeline (DEFLATE)" : m.includes('zstd') ? 'kvtc plan + zstd' : m;
  for (const r of rows) {
    const name = method(String(r['method']));
    if (name === 'fp16') continue; // zero error: off a log scale
    for (const [stream, col] of [['keys', 'relMSE K'], ['values', 'relMSE V']] as const) {
      const v = Number(r[col]);
      if (v > 0) pts.push({ method: name, ratio: Number(r['ratio']), value: v, stream });
      // The Gaussian rate–distortion bound at kvtc's distortion: the ratio an ideal coder would reach.
      const bound = Number(r[stream === 'keys' ? 'bound bits/value K' : 'bound bits/value V']);
      if (name === 'kvtc (rANS)' && bound > 0 && v > 0) pts.push({ method: 'Gaussian RD bound', ratio: 16 / bound, value: v, stream });
    }
  }
  return pts;
}

export async function writeReport(dir: string): Promise<string[]> {
  const written: string[] = [];
  const codec = readJson(dir, 'codec.json');
  const store = readJson(dir, 'store.json');
  const fidelity = readJson(dir, 'fidelity.json');
  const md: string[] = ['# kvtc benchmark report', ''];
  const save = (name: string, content: string | Uint8Array) => {
    writeFileSync(join(dir, name), content);
    written.push(join(dir, name));
  };
  const plot = (name: string, svg: string) => {
    save(`${name}.svg`, svg);
    save(`${name}.png`, svgToPng(svg));
  };
  if (codec) {
    md.push(`Codec benchmark, ${String(codec['date'])}, ${String(codec['cpu'])}${codec['quick'] ? ' (quick)' : ''}.`, '');
    const real = codec['realKv'] as { rows: Row[]; coderRows: Row[] } | undefined;
    if (real) {
      plot('rate-distortion', await renderSvg(rateDistortionSpec(rdPoints(real.rows), 'relative MSE (log)', 'Real stories260K KV: ratio vs error')));
      md.push('## Rate–distortion on real KV', '', '![ratio vs relative MSE](rate-distortion.svg)', '', mdTable(real.rows), '');
      md.push('## Entropy coders on the same quantized payload', '', mdTable(real.coderRows), '');
    }
    const tp = codec['throughput'] as { rows: Row[]; tokens: number } | undefined;
    if (tp) {
      const bars: ThroughputBar[] = [];
      for (const r of tp.rows) {
        const name = r['PCA layers'] === '-' ? String(r['method']) : `${String(r['method'])}, PCA ${String(r['PCA layers'])} layer(s)`;
        bars.push({ method: name, direction: 'encode', mbPerSecond: Number(r['encode MB/s']) });
        bars.push({ method: name, direction: 'decode', mbPerSecond: Number(r['decode MB/s']) });
      }
      plot('throughput', await renderSvg(throughputSpec(bars, `Llama-3.1-8B-shaped bf16 KV, ${tp.tokens} tokens: throughput per core`)));
      md.push('## Throughput', '', '![throughput](throughput.svg)', '', mdTable(tp.rows), '');
    }
  }
  if (fidelity) {
    const rows = fidelity['rows'] as { method: string; ratio: number; meanKl: number; top1: number; relMseK: number; relMseV: number }[];
    // kvtc rows are one curve per plan ("kvtc whole-cache 8x" -> "kvtc whole-cache").
    const pts: RdPoint[] = rows.map((r) => ({ method: r.method.startsWith('kvtc') ? r.method.replace(/ [\d.]+x$/, '') : r.method, ratio: r.ratio, value: Math.max(r.meanKl, 1e-9) }));
    plot('rd-kl', await renderSvg(rateDistortionSpec(pts, 'next-token KL, nats (log)', 'stories260K continuing from a restored cache')));
    md.push(
      '## Next-token fidelity on a real model',
      '',
      `Teacher-forced over ${String(fidelity['steps'])} tokens after a ${String(fidelity['prefix'])}-token prefix, ${String(fidelity['prompts'])} prompts not used for calibration.`,
      '',
      '![ratio vs next-token KL](rd-kl.svg)',
      '',
      mdTable(rows.map((r) => ({ method: r.method, ratio: r.ratio, 'relMSE K': r.relMseK, 'relMSE V': r.relMseV, 'KL (nats)': r.meanKl, 'top-1 %': 100 * r.top1 }))),
      '',
    );
  }
  // Each workload as run by default (a new cache per get) and with --into (each client's own cache, reused).
  for (const [key, how] of [['rows', ''], ['rowsInto', ', gets into each client\'s own cache']] as const) {
    const rows = store?.[key] as Row[] | undefined;
    if (!rows?.length) continue;
    const cols = Object.keys(rows[0] ?? {}).filter((c) => c !== 'compression');
    md.push(`## Store under a Zipf workload (kvtc vs raw lower tiers${how})`, '', mdTable(cols.map((c) => ({ metric: c, kvtc: rows[0]![c]!, raw: rows[1]![c]! }))), '');
  }
  const multiTurnModes = [
    ['multiTurn', ''],
    ['multiTurnInto', ', gets into each client\'s own cache'],
    ['multiTurnPaced', ', turns offered at a fixed rate'],
    ['multiTurnPacedInto', ', turns offered at a fixed rate, gets into each client\'s own cache'],
  ] as const;
  for (const [key, how] of multiTurnModes) {
    const turns = store?.[key] as Row[] | undefined;
    if (!turns?.length) continue;
    const cols = Object.keys(turns[0] ?? {}).filter((c) => c !== 'store');
    md.push(
      `## Store under a multi-turn workload (chunks vs one blob per session vs raw lower tiers${how})`,
      '',
      mdTable(cols.map((c) => Object.fromEntries([['metric', c], ...turns.map((r) => [String(r['store']), r[c]!])]) as Row)),
      '',
    );
  }
  save('report.md', md.join('\n'));
  return written;
}
