/**
 * Moving a node-llama-cpp context sequence's KV cache in and out of memory. node-llama-cpp has
 * no in-memory state API, only saveStateToFile / loadStateFromFile, so each transfer goes
 * through a private temporary file that is always removed.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LlamaContextSequence } from 'node-llama-cpp';
import { KvtcError } from '../../errors.js';
import type { KvCache, KvLayout } from '../../layout.js';
import { type LlamaSequenceState, parseSequenceState, writeSequenceState } from './state.js';

async function withTempFile<T>(fn: (file: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'kvtc-seq-'));
  try {
    return await fn(join(dir, 'state.bin'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The sequence's state file, exactly as llama.cpp writes it. */
export function readSequenceFile(sequence: LlamaContextSequence): Promise<Uint8Array> {
  return withTempFile(async (file) => {
    await sequence.saveStateToFile(file);
    return new Uint8Array(await readFile(file));
  });
}

/** Reads a sequence's state (KV cache, token ids, layout details) as a parsed llama.cpp state. */
export async function readSequenceState(sequence: LlamaContextSequence, layout: KvLayout): Promise<LlamaSequenceState> {
  const bytes = await readSequenceFile(sequence);
  const state = parseSequenceState(bytes, layout.rope, { kvHeads: layout.kvHeads, headDim: layout.headDim });
  if (state.cache.layout.layers !== layout.layers) {
    throw new KvtcError('E_LAYOUT', `sequence state has ${state.cache.layout.layers} layers, the layout says ${layout.layers}`);
  }
  return state;
}

/** Loads a state into a sequence (replacing what it held). */
export async function writeSequenceStateTo(sequence: LlamaContextSequence, state: LlamaSequenceState): Promise<void> {
  const bytes = writeSequenceState(state);
  await withTempFile(async (file) => {
    await writeFile(file, bytes);
    await sequence.loadStateFromFile(file, { acceptRisk: true });
  });
}

/** What kvtc keeps besides the KV cache to rebuild a state llama.cpp loads. */
export interface SequenceExtras {
  tokens: Int32Array;
  vTrans: 0 | 1;
}

const EXTRAS_MAGIC = 0x5153564b; // "KVSQ"

/** Serializes the extras into a store attachment: magic, version, v_trans, token ids. */
export function encodeExtras(e: SequenceExtras): Uint8Array {
  const out = new Uint8Array(12 + 4 * e.tokens.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, EXTRAS_MAGIC, true);
  dv.setUint16(4, 1, true);
  dv.setUint16(6, e.vTrans, true);
  dv.setUint32(8, e.tokens.length, true);
  for (let i = 0; i < e.tokens.length; i++) dv.setInt32(12 + 4 * i, e.tokens[i]!, true);
  return out;
}

export function decodeExtras(bytes: Uint8Array | undefined): SequenceExtras {
  if (!bytes || bytes.length < 12) throw new KvtcError('E_CORRUPT', 'session has no llama.cpp sequence attachment');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = dv.getUint32(8, true);
  const vTrans = dv.getUint16(6, true);
  if (dv.getUint32(0, true) !== EXTRAS_MAGIC || dv.getUint16(4, true) !== 1 || (vTrans !== 0 && vTrans !== 1) || bytes.length !== 12 + 4 * n) {
    throw new KvtcError('E_CORRUPT', 'session attachment is not a llama.cpp sequence attachment');
  }
  const tokens = new Int32Array(n);
  for (let i = 0; i < n; i++) tokens[i] = dv.getInt32(12 + 4 * i, true);
  return { tokens, vTrans: vTrans as 0 | 1 };
}

/** A single-sequence state for a cache (every cell belongs to sequence 0). */
export function stateFor(cache: KvCache, extras: SequenceExtras): LlamaSequenceState {
  const n = cache.tokens;
  const positions = cache.positions ?? Int32Array.from({ length: n }, (_, i) => i);
  return {
    version: 3,
    tokens: extras.tokens,
    cells: {
      pos: Int32Array.from(positions),
      seqIdStart: Uint32Array.from({ length: n + 1 }, (_, i) => i),
      seqIds: new Int32Array(n),
    },
    vTrans: extras.vTrans,
    kvDim: cache.layout.kvHeads * cache.layout.headDim,
    cache,
  };
}
