/**
 * Moving a node-llama-cpp context sequence's KV cache in and out of memory. node-llama-cpp has
 * no in-memory state API, only saveStateToFile / loadStateFromFile, so each transfer goes
 * through a private temporary file (in memory-backed /dev/shm where there is one) that is always
 * removed.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LlamaContextSequence } from 'node-llama-cpp';
import { ByteReader } from '../../bytes.js';
import { KvtcError } from '../../errors.js';
import type { KvCache, KvLayout } from '../../layout.js';
import { type LlamaSequenceState, parseSequenceState, writeSequenceState } from './state.js';

let memoryBase: string | undefined;

/**
 * Where state files go: $KVTC_STATE_DIR when set, else a memory-backed folder (/dev/shm on
 * Linux) when there is a writable one, so a transfer costs no disk I/O, else the OS temp folder.
 */
export function stateTempBase(): string {
  const env = process.env.KVTC_STATE_DIR;
  if (env) return env;
  if (memoryBase === undefined) {
    memoryBase = tmpdir();
    try {
      if (statSync('/dev/shm').isDirectory()) {
        accessSync('/dev/shm', constants.W_OK);
        memoryBase = '/dev/shm';
      }
    } catch {
      // no /dev/shm (macOS, Windows, some containers): the OS temp folder it is
    }
  }
  return memoryBase;
}

/** Runs fn with a path in a private folder that is removed afterwards, on success and on error. */
async function withTempFile<T>(fn: (file: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(stateTempBase(), 'kvtc-seq-'));
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
    try {
      await sequence.loadStateFromFile(file, { acceptRisk: true });
    } catch (err) {
      throw new KvtcError(
        'E_LAYOUT',
        `llama.cpp refused the sequence state (${(err as Error).message}); the context must use the KV cache types and flash-attention setting the state was saved with`,
        { cause: err },
      );
    }
  });
}

/** What kvtc keeps besides the KV cache to rebuild a state llama.cpp loads. */
export interface SequenceExtras {
  tokens: Int32Array;
  vTrans: 0 | 1;
  /** ggml types of the K and V cache the state came from (absent in version-1 attachments). */
  kType?: number;
  vType?: number;
  /** Fingerprint (32 hex digits) of the model that computed the cache; absent in version 1. */
  model?: string;
}

const EXTRAS_MAGIC = 0x5153564b; // "KVSQ"
const V2_HEADER = 36;

/**
 * Serializes the extras into a store attachment, version 2: u32 magic, u16 version, u16 v_trans,
 * u32 K ggml type, u32 V ggml type, 16 bytes model fingerprint, u32 n_tokens, i32 tokens.
 */
export function encodeExtras(e: SequenceExtras): Uint8Array {
  if (!e.model || !/^[0-9a-f]{32}$/.test(e.model) || e.kType === undefined || e.vType === undefined) {
    throw new KvtcError('E_INTERNAL', 'sequence extras need the cache types and a model fingerprint');
  }
  const out = new Uint8Array(V2_HEADER + 4 * e.tokens.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, EXTRAS_MAGIC, true);
  dv.setUint16(4, 2, true);
  dv.setUint16(6, e.vTrans, true);
  dv.setUint32(8, e.kType, true);
  dv.setUint32(12, e.vType, true);
  out.set(Buffer.from(e.model, 'hex'), 16);
  dv.setUint32(32, e.tokens.length, true);
  for (let i = 0; i < e.tokens.length; i++) dv.setInt32(V2_HEADER + 4 * i, e.tokens[i]!, true);
  return out;
}

/** Reads a version-2 attachment, or a version-1 one (magic, version, v_trans, tokens; no types, no model). */
export function decodeExtras(bytes: Uint8Array | undefined): SequenceExtras {
  if (!bytes || bytes.length < 12) throw new KvtcError('E_CORRUPT', 'session has no llama.cpp sequence attachment');
  const bad = (): KvtcError => new KvtcError('E_CORRUPT', 'session attachment is not a llama.cpp sequence attachment');
  const r = new ByteReader(bytes, bad);
  const magic = r.u32('magic');
  const version = r.u16('version');
  const vTrans = r.u16('v_trans');
  if (magic !== EXTRAS_MAGIC || (vTrans !== 0 && vTrans !== 1)) throw bad();
  const extras: Omit<SequenceExtras, 'tokens'> = { vTrans: vTrans as 0 | 1 };
  if (version === 2) {
    extras.kType = r.u32('K type');
    extras.vType = r.u32('V type');
    extras.model = Buffer.from(r.view(16, 'model fingerprint')).toString('hex');
  } else if (version !== 1) {
    throw bad();
  }
  const n = r.u32('n_tokens');
  if (r.left !== 4 * n) throw bad();
  return { ...extras, tokens: r.int32s(n, 'tokens') };
}

/** A single-sequence state for a cache (every cell belongs to sequence 0). */
export function stateFor(cache: KvCache, extras: SequenceExtras): LlamaSequenceState {
  const n = cache.tokens;
  const positions = cache.positions ?? Int32Array.from({ length: n }, (_, i) => i);
  const state: LlamaSequenceState = {
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
  if (extras.kType !== undefined) state.kType = extras.kType;
  if (extras.vType !== undefined) state.vType = extras.vType;
  return state;
}
