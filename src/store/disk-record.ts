/**
 * The disk tier's record format: what a session's metadata record holds, how it is validated,
 * stored (JSON with exact binary fields in base64) and framed (version byte and CRC-32C), apart
 * from the LMDB tier that keeps the records (disk-tier.ts).
 *
 * Record versions: 1 = the first layout (one blob per session: read as a session without chunks);
 * 2 = a manifest: `chunks` names the session's encoded chunks in token order, the record's blob
 * holds the rest (the tail). Both are read; 2 is written.
 */
import { crc32c } from '../binding.js';
import { KvtcError, describeValue as describe } from '../errors.js';
import { DTYPES, validateLayout } from '../layout.js';
import type { DType, KvLayout, RopeSpec } from '../layout.js';
import { fromMemRecord, type MemRecord, packStored } from './packed-chunks.js';

export const RECORD_VERSION = 2;
/** Versions this format reads. */
const READ_VERSIONS = new Set([1, 2]);
const FINGERPRINT_RE = /^[0-9a-f]{32}$/;
const CHUNK_KEY_RE = /^[0-9a-f]{32}$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Metadata of one disk record. */
export interface DiskRecordMeta {
  /** Session id. */
  id: string;
  /** 32-hex fingerprint of the profile the blob was encoded with. */
  fingerprint: string;
  /** Layout of the cache; `dtype` is the blob's dtype. `rope.freqs` round-trips exactly. */
  layout: KvLayout;
  tokens: number;
  /** Size of the raw cache in its dtype, bytes. */
  rawBytes: number;
  /** Size of the blob, bytes (computed by `put`). */
  storedBytes: number;
  /** ms since the epoch. */
  createdAt: number;
  /** ms since the epoch; see `DiskTier.touch` for how it is persisted. */
  lastAccess: number;
  /** Time to live after the last access, ms; 0 = no TTL. */
  ttlMs: number;
  priority: number;
  pinned: boolean;
  /** CRC-32C of the blob (computed by `put`). */
  checksum: number;
  /** How the blob is encoded; opaque to this tier. */
  format: 'kvtc' | 'raw';
  /** Caller's opaque bytes kept with the session (e.g. an engine's token ids). */
  attachment?: Uint8Array;
  /** Token ids, one per cached position (put's `tokens`): what prefix lookups match. */
  tokenIds?: Int32Array;
  /** The namespace the session's prefixes are shared within (put's `namespace`). */
  namespace?: string;
  /** The session's encoded chunks, in token order, before its blob (the tail); absent: none. */
  chunks?: ChunkRef[];
}

/** A chunk a manifest names: its key (32 hex digits), size and tokens (chunks follow each other from token 0). */
export interface ChunkRef {
  key: string;
  bytes: number;
  tokens: number;
}

/** What `put` takes: the tier computes `checksum` and `storedBytes` from the blob. */
export type DiskPutMeta = Omit<DiskRecordMeta, 'checksum' | 'storedBytes'>;

/** A record moved out of the live set by `quarantine`. */
export interface QuarantinedRecord {
  id: string;
  reason: string;
  /** ms since the epoch. */
  quarantinedAt: number;
  /** The metadata as it was, when it could be decoded. */
  meta?: DiskRecordMeta;
  /** Size of the quarantined blob, bytes (undefined when there was no blob). */
  blobBytes?: number;
  /** False when the blob was not kept (it alone exceeded quarantineBytes). */
  blobKept?: boolean;
}

// ------------------------------------------------------------------------------------------------
// validation, storage form, framing

interface StoredRope {
  theta: number;
  style: RopeSpec['style'];
  dims?: number;
  /** The float32 values' little-endian bytes in base64: exact to the bit (JSON numbers lose -0). */
  freqs?: string;
}

interface StoredLayout {
  layers: number;
  kvHeads: number;
  headDim: number;
  dtype: DType;
  rope?: StoredRope;
}

/** A manifest's chunks as stored: the keys concatenated, sizes and token counts (compact: a million chunks parse at open). */
interface StoredChunks {
  keys: string;
  bytes: number[];
  tokens: number[];
}

type StoredMeta = Omit<DiskRecordMeta, 'layout' | 'attachment' | 'tokenIds' | 'chunks'> & { layout: StoredLayout; attachment?: string; tokenIds?: string; chunks?: StoredChunks };

export interface StoredQuarantine {
  id: string;
  reason: string;
  quarantinedAt: number;
  meta: StoredMeta | null;
  /** Undecodable metadata bytes, base64. */
  rawMeta: string | null;
  blobBytes: number | null;
  /** Absent in entries written before quarantines were bounded (their blob was always kept). */
  blobKept?: boolean;
}

function optionError(field: string, want: string, got: unknown): KvtcError {
  return new KvtcError('E_OPTIONS', `meta.${field} must be ${want}, got ${describe(got)}`);
}

/** Validates put's metadata and returns the tier's own copy with storedBytes and checksum. */
export function normalizeMeta(m: DiskPutMeta, storedBytes: number, checksum: number): DiskRecordMeta {
  if (typeof m.fingerprint !== 'string' || !FINGERPRINT_RE.test(m.fingerprint)) {
    throw optionError('fingerprint', 'a 32-character lowercase hex string', m.fingerprint);
  }
  const layout = copyLayout(validateLayout(m.layout, 'meta.layout'));
  if (layout.rope && !Number.isFinite(layout.rope.theta)) {
    // JSON cannot hold NaN/Infinity; the record would not read back.
    throw new KvtcError('E_LAYOUT', `meta.layout.rope.theta must be a finite number, got ${String(layout.rope.theta)}`);
  }
  for (const f of ['tokens', 'rawBytes'] as const) {
    if (!Number.isSafeInteger(m[f]) || m[f] < 0) throw optionError(f, 'a non-negative integer', m[f]);
  }
  for (const f of ['createdAt', 'lastAccess', 'priority'] as const) {
    if (typeof m[f] !== 'number' || !Number.isFinite(m[f])) throw optionError(f, 'a finite number', m[f]);
  }
  if (typeof m.ttlMs !== 'number' || !Number.isFinite(m.ttlMs) || m.ttlMs < 0) throw optionError('ttlMs', 'a finite number >= 0', m.ttlMs);
  if (typeof m.pinned !== 'boolean') throw optionError('pinned', 'a boolean', m.pinned);
  if (m.format !== 'kvtc' && m.format !== 'raw') throw optionError('format', "'kvtc' or 'raw'", m.format);
  if (m.attachment !== undefined && !(m.attachment instanceof Uint8Array)) throw optionError('attachment', 'a Uint8Array', m.attachment);
  if (m.tokenIds !== undefined && (!(m.tokenIds instanceof Int32Array) || m.tokenIds.length !== m.tokens)) {
    throw optionError('tokenIds', `an Int32Array of ${m.tokens} token ids`, m.tokenIds);
  }
  if (m.namespace !== undefined && typeof m.namespace !== 'string') throw optionError('namespace', 'a string', m.namespace);
  if (m.chunks !== undefined && checkChunkRefs(m.chunks) !== undefined) throw optionError('chunks', 'an array of { key: 32 hex digits, bytes: integer > 0, tokens: integer > 0 }', m.chunks);
  // `+ 0` turns -0 into 0: JSON has no -0, and the record must read back equal to what put returned.
  const out: DiskRecordMeta = {
    id: m.id,
    fingerprint: m.fingerprint,
    layout,
    tokens: m.tokens,
    rawBytes: m.rawBytes,
    storedBytes,
    createdAt: m.createdAt + 0,
    lastAccess: m.lastAccess + 0,
    ttlMs: m.ttlMs + 0,
    priority: m.priority + 0,
    pinned: m.pinned,
    checksum,
    format: m.format,
  };
  if (m.attachment !== undefined) out.attachment = new Uint8Array(m.attachment);
  if (m.tokenIds !== undefined) out.tokenIds = new Int32Array(m.tokenIds);
  if (m.namespace !== undefined) out.namespace = m.namespace;
  if (m.chunks !== undefined) out.chunks = m.chunks.map((c) => ({ key: c.key, bytes: c.bytes, tokens: c.tokens }));
  return out;
}

/** What is wrong with a chunk list, or undefined. */
function checkChunkRefs(v: unknown): string | undefined {
  if (!Array.isArray(v)) return 'has bad chunks';
  for (const c of v as unknown[]) {
    if (!isRecord(c) || typeof c['key'] !== 'string' || !CHUNK_KEY_RE.test(c['key']) || !Number.isSafeInteger(c['bytes']) || (c['bytes'] as number) <= 0
      || !Number.isSafeInteger(c['tokens']) || (c['tokens'] as number) <= 0) return 'has a bad chunk reference';
  }
  return undefined;
}

function copyLayout(l: KvLayout): KvLayout {
  const out: KvLayout = { layers: l.layers, kvHeads: l.kvHeads, headDim: l.headDim, dtype: l.dtype };
  if (l.rope) {
    const rope: RopeSpec = { theta: l.rope.theta, style: l.rope.style };
    if (l.rope.dims !== undefined) rope.dims = l.rope.dims;
    if (l.rope.freqs !== undefined) rope.freqs = new Float32Array(l.rope.freqs);
    out.rope = rope;
  }
  return out;
}

function float32ToBase64(a: Float32Array): string {
  const b = Buffer.alloc(a.length * 4);
  for (let i = 0; i < a.length; i++) b.writeFloatLE(a[i]!, i * 4);
  return b.toString('base64');
}

function base64ToFloat32(s: string): Float32Array | undefined {
  const b = Buffer.from(s, 'base64');
  if (b.length % 4 !== 0) return undefined;
  const out = new Float32Array(b.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = b.readFloatLE(i * 4);
  return out;
}

export function cloneMeta(m: DiskRecordMeta): DiskRecordMeta {
  const out: DiskRecordMeta = { ...m, layout: copyLayout(m.layout) };
  if (m.attachment) out.attachment = new Uint8Array(m.attachment);
  if (m.tokenIds) out.tokenIds = new Int32Array(m.tokenIds);
  if (m.chunks) out.chunks = m.chunks.map((c) => ({ ...c }));
  return out;
}

export function storedMeta(m: DiskRecordMeta): StoredMeta {
  const l = m.layout;
  const layout: StoredLayout = { layers: l.layers, kvHeads: l.kvHeads, headDim: l.headDim, dtype: l.dtype };
  if (l.rope) {
    const rope: StoredRope = { theta: l.rope.theta, style: l.rope.style };
    if (l.rope.dims !== undefined) rope.dims = l.rope.dims;
    if (l.rope.freqs !== undefined) rope.freqs = float32ToBase64(l.rope.freqs);
    layout.rope = rope;
  }
  const { attachment, tokenIds, chunks, ...rest } = m;
  const out: StoredMeta = { ...rest, layout };
  if (chunks) out.chunks = { keys: chunks.map((c) => c.key).join(''), bytes: chunks.map((c) => c.bytes), tokens: chunks.map((c) => c.tokens) };
  if (attachment) out.attachment = Buffer.from(attachment.buffer, attachment.byteOffset, attachment.byteLength).toString('base64');
  if (tokenIds) out.tokenIds = Buffer.from(tokenIds.buffer, tokenIds.byteOffset, tokenIds.byteLength).toString('base64');
  return out;
}

/** u8 version | u32le CRC-32C of the JSON | JSON: bit rot in metadata is caught like bit rot in blobs. */
export function encodeFramed(value: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(value), 'utf8');
  const out = Buffer.allocUnsafe(5 + json.length);
  out[0] = RECORD_VERSION;
  out.writeUInt32LE(crc32c(json) >>> 0, 1);
  json.copy(out, 5);
  return out;
}

type Decoded<T> = { ok: true; value: T } | { ok: false; detail: string };

function decodeFramed(bytes: Uint8Array): Decoded<unknown> {
  if (bytes.byteLength < 5) return { ok: false, detail: `metadata is ${bytes.byteLength} bytes, too short` };
  if (!READ_VERSIONS.has(bytes[0]!)) return { ok: false, detail: `metadata version ${String(bytes[0])} is not one of ${[...READ_VERSIONS].join(', ')}` };
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const json = buf.subarray(5);
  const crc = crc32c(json) >>> 0;
  if (crc !== buf.readUInt32LE(1)) return { ok: false, detail: `metadata CRC-32C ${hex32(crc)} != recorded ${hex32(buf.readUInt32LE(1))}` };
  try {
    return { ok: true, value: JSON.parse(utf8.decode(json)) as unknown };
  } catch (err) {
    return { ok: false, detail: `metadata is not JSON: ${errorText(err)}` };
  }
}

type DecodedMeta = { ok: true; meta: DiskRecordMeta } | { ok: false; detail: string };

/** Decodes and fully validates a metadata record stored under `id`; never throws. */
export function decodeMeta(bytes: Uint8Array, id: string): DecodedMeta {
  const d = decodeMemRecord(bytes, id);
  return d.ok ? { ok: true, meta: fromMemRecord(d.meta) } : d;
}

/** decodeMeta with the chunk list left packed (the disk tier's in-memory form; what open loads). */
export function decodeMemRecord(bytes: Uint8Array, id: string): { ok: true; meta: MemRecord } | { ok: false; detail: string } {
  const framed = decodeFramed(bytes);
  if (!framed.ok) return framed;
  const meta = parseStoredMeta(framed.value);
  if (typeof meta === 'string') return { ok: false, detail: `metadata ${meta}` };
  if (meta.id !== id) return { ok: false, detail: `metadata belongs to '${meta.id}'` };
  return { ok: true, meta };
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The metadata a stored JSON value stands for, or a string saying what is wrong with it. */
function parseStoredMeta(v: unknown): MemRecord | string {
  if (!isRecord(v)) return 'is not an object';
  const num = (f: string): number | undefined => (typeof v[f] === 'number' && Number.isFinite(v[f]) ? v[f] : undefined);
  const id = v['id'];
  const fingerprint = v['fingerprint'];
  const format = v['format'];
  if (typeof id !== 'string' || id.length === 0) return 'has no id';
  if (typeof fingerprint !== 'string' || !FINGERPRINT_RE.test(fingerprint)) return 'has a bad fingerprint';
  if (format !== 'kvtc' && format !== 'raw') return 'has a bad format';
  if (typeof v['pinned'] !== 'boolean') return 'has a bad pinned flag';
  const tokens = num('tokens');
  const rawBytes = num('rawBytes');
  const storedBytes = num('storedBytes');
  const createdAt = num('createdAt');
  const lastAccess = num('lastAccess');
  const ttlMs = num('ttlMs');
  const priority = num('priority');
  const checksum = num('checksum');
  if (tokens === undefined || rawBytes === undefined || storedBytes === undefined || createdAt === undefined
    || lastAccess === undefined || ttlMs === undefined || priority === undefined || checksum === undefined) {
    return 'has a missing or non-numeric field';
  }
  if (!Number.isSafeInteger(storedBytes) || storedBytes < 0 || ttlMs < 0 || !Number.isInteger(checksum) || checksum < 0 || checksum > 0xffffffff) {
    return 'has an out-of-range field';
  }
  const layout = parseStoredLayout(v['layout']);
  if (typeof layout === 'string') return layout;
  const out: MemRecord = { id, fingerprint, layout, tokens, rawBytes, storedBytes, createdAt, lastAccess, ttlMs, priority, pinned: v['pinned'], checksum, format };
  const att = v['attachment'];
  if (att !== undefined) {
    if (typeof att !== 'string') return 'has a bad attachment';
    out.attachment = new Uint8Array(Buffer.from(att, 'base64'));
  }
  const ids = v['tokenIds'];
  if (ids !== undefined) {
    const b = typeof ids === 'string' ? Buffer.from(ids, 'base64') : undefined;
    if (!b || b.length !== 4 * tokens) return 'has bad tokenIds';
    const t = new Int32Array(tokens);
    new Uint8Array(t.buffer).set(b);
    out.tokenIds = t;
  }
  const ns = v['namespace'];
  if (ns !== undefined) {
    if (typeof ns !== 'string') return 'has a bad namespace';
    out.namespace = ns;
  }
  const chunks = v['chunks'];
  if (chunks !== undefined) {
    const parsed = parseStoredChunks(chunks, tokens);
    if (typeof parsed === 'string') return parsed;
    out.packedChunks = parsed;
  }
  return out;
}

/** The chunk references of a stored manifest, packed (packed-chunks.ts), or what is wrong with them. */
function parseStoredChunks(v: unknown, sessionTokens: number): Uint8Array | string {
  if (!isRecord(v)) return 'has bad chunks';
  const { keys, bytes, tokens } = v;
  if (typeof keys !== 'string' || !Array.isArray(bytes) || !Array.isArray(tokens)) return 'has bad chunks';
  const n = bytes.length;
  if (tokens.length !== n || keys.length !== 32 * n) return 'has bad chunk keys';
  // Hex decoding stops at the first pair that is not hex: a short result is a bad key.
  const keyBytes = Buffer.from(keys, 'hex');
  if (keyBytes.length !== 16 * n) return 'has bad chunk keys';
  let held = 0;
  for (let i = 0; i < n; i++) {
    const b = bytes[i] as unknown;
    const t = tokens[i] as unknown;
    if (!Number.isSafeInteger(b) || (b as number) <= 0 || (b as number) > 0xffffffff || !Number.isSafeInteger(t) || (t as number) <= 0) return 'has a bad chunk reference';
    held += t as number;
  }
  if (held > sessionTokens) return 'has chunks holding more tokens than the session';
  return packStored(keyBytes, bytes as number[], tokens as number[]);
}

function parseStoredLayout(v: unknown): KvLayout | string {
  if (!isRecord(v)) return 'has no layout';
  const { layers, kvHeads, headDim, dtype } = v;
  if (typeof layers !== 'number' || typeof kvHeads !== 'number' || typeof headDim !== 'number' || !DTYPES.includes(dtype as DType)) {
    return 'has a bad layout';
  }
  const layout: KvLayout = { layers, kvHeads, headDim, dtype: dtype as DType };
  const r = v['rope'];
  if (r !== undefined) {
    if (!isRecord(r) || typeof r['theta'] !== 'number' || (r['style'] !== 'interleaved' && r['style'] !== 'neox')) return 'has a bad rope';
    const rope: RopeSpec = { theta: r['theta'], style: r['style'] };
    if (r['dims'] !== undefined) {
      if (typeof r['dims'] !== 'number') return 'has a bad rope.dims';
      rope.dims = r['dims'];
    }
    if (r['freqs'] !== undefined) {
      const f = typeof r['freqs'] === 'string' ? base64ToFloat32(r['freqs']) : undefined;
      if (!f) return 'has bad rope.freqs';
      rope.freqs = f;
    }
    layout.rope = rope;
  }
  try {
    return validateLayout(layout, 'layout');
  } catch (err) {
    return `has an invalid layout: ${errorText(err)}`;
  }
}

export function decodeQuarantine(bytes: Uint8Array, id: string): QuarantinedRecord | undefined {
  const framed = decodeFramed(bytes);
  if (!framed.ok || !isRecord(framed.value)) return undefined;
  const v = framed.value;
  if (typeof v['reason'] !== 'string' || typeof v['quarantinedAt'] !== 'number') return undefined;
  const q: QuarantinedRecord = { id, reason: v['reason'], quarantinedAt: v['quarantinedAt'] };
  const meta = v['meta'] === null ? undefined : parseStoredMeta(v['meta']);
  if (meta !== undefined && typeof meta !== 'string') q.meta = fromMemRecord(meta);
  if (typeof v['blobBytes'] === 'number') q.blobBytes = v['blobBytes'];
  if (v['blobKept'] === false) q.blobKept = false;
  return q;
}

/** Same record (not only the same id): a replacement has another checksum or creation time. */
export function sameGeneration(a: Pick<DiskRecordMeta, 'checksum' | 'createdAt' | 'storedBytes'>, b: Pick<DiskRecordMeta, 'checksum' | 'createdAt' | 'storedBytes'>): boolean {
  return a.checksum === b.checksum && a.createdAt === b.createdAt && a.storedBytes === b.storedBytes;
}


export function isExpired(m: Pick<DiskRecordMeta, 'ttlMs' | 'lastAccess'>, now: number): boolean {
  return m.ttlMs > 0 && now >= m.lastAccess + m.ttlMs;
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function hex32(n: number): string {
  return n.toString(16).padStart(8, '0');
}
