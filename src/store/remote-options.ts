/**
 * The remote tier's options: what a caller passes, checked once and resolved into the settings the
 * tier runs with (defaults filled in, the URL split into hosts, credentials and TLS).
 */
import type { ConnectionOptions } from 'node:tls';
import { KvtcError, checkKeys, invalidParameter } from '../errors.js';
import { checkNamespace } from './remote-keys.js';

/** Where and how to reach the shared Redis / Valkey, and how long what is stored there lives. */
export interface RemoteOptions {
  /**
   * `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS. In cluster mode, one seed
   * node of the cluster (the others are discovered).
   */
  url: string;
  /**
   * The tenant: every key carries it, and a namespace never reads another's values. Any string of
   * 1 to 128 characters (escaped inside keys).
   * @default 'default'
   */
  namespace?: string;
  /**
   * Admission guard, in bytes: a put is refused (E_CAPACITY) while the server's memory in use
   * (INFO memory `used_memory`, summed over the masters of a cluster, read at most once a second)
   * plus the put's bytes exceeds it. The server's own `maxmemory` remains the hard bound; see the
   * README section on eviction. Undefined: no guard.
   * @default undefined
   */
  capacityBytes?: number;
  /**
   * How long a session stays on the remote after it was last put or read, in milliseconds.
   * Remote storage is reclaimed by leases (remote-tier.ts), so every session expires unless used.
   * @default 86_400_000 (24 hours)
   */
  ttlMs?: number;
  /**
   * TLS: `true` for the system's trust store, or node:tls connection options (ca, cert, key,
   * servername…). A `rediss://` URL implies `true`.
   * @default false
   */
  tls?: ConnectionOptions | boolean;
  /** ACL user name (AUTH user pass). Overrides the URL's. @default the URL's, else none */
  username?: string;
  /** Password (AUTH). Overrides the URL's. @default the URL's, else none */
  password?: string;
  /**
   * A getSession() that takes longer than this is a miss with reason 'timeout', in milliseconds.
   * @default 1000
   */
  timeoutMs?: number;
  /**
   * A putSession() that takes longer than this fails with E_IO, in milliseconds; its manifest is
   * then never written (its chunks expire by their lease).
   * @default 10000
   */
  putTimeoutMs?: number;
  /**
   * How long the first connection may take, in milliseconds, before connect() fails with E_IO
   * (or, with `waitForReady: false`, before the tier goes on reconnecting in the background).
   * @default 2000
   */
  connectTimeoutMs?: number;
  /**
   * Whether connect() waits for the server. `false`: connect() resolves at once, calls fail fast
   * (misses, E_IO) until the server is reachable, and the tier reconnects with backoff.
   * @default true
   */
  waitForReady?: boolean;
  /**
   * Extra lifetime of a chunk beyond the manifests naming it, in milliseconds: how long a reader
   * that has read a manifest may take to fetch its chunks, and the most that one put may spend
   * between its first chunk and its manifest (a put is abandoned past half of it). Must exceed
   * the clock drift between cluster nodes over one ttlMs.
   * @default 600_000 (10 minutes)
   */
  leaseGraceMs?: number;
  /**
   * Most commands one put or get keeps in flight at once.
   * @default 32
   */
  maxInFlight?: number;
  /**
   * Redis Cluster: `true` to use the URL as a seed node, or the seed nodes as `host:port` strings
   * (or redis:// URLs). Keys carry no hash tags, so a session's chunks spread over every shard.
   * @default false
   */
  cluster?: boolean | { nodes: string[] };
}

/** The options of RemoteOptions, for checkKeys. */
const KNOWN = [
  'url', 'namespace', 'capacityBytes', 'ttlMs', 'tls', 'username', 'password', 'timeoutMs', 'putTimeoutMs',
  'connectTimeoutMs', 'waitForReady', 'leaseGraceMs', 'maxInFlight', 'cluster',
] as const;

/** A host and port of a server or a cluster seed. */
export interface HostPort {
  host: string;
  port: number;
}

/** RemoteOptions checked and completed. */
export interface ResolvedRemoteOptions {
  nodes: HostPort[];
  cluster: boolean;
  db: number;
  namespace: string;
  capacityBytes: number | undefined;
  ttlMs: number;
  tls: ConnectionOptions | undefined;
  username: string | undefined;
  password: string | undefined;
  timeoutMs: number;
  putTimeoutMs: number;
  connectTimeoutMs: number;
  waitForReady: boolean;
  leaseGraceMs: number;
  maxInFlight: number;
}

/** Longest TTL or lease accepted: one year, far below what PEXPIRE takes. */
const MAX_MS = 365 * 86_400_000;

function positiveInt(v: unknown, field: string, max: number, def: number): number {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0 || v > max) {
    throw invalidParameter(field, `an integer in [1, ${max}]`, v);
  }
  return v;
}

function parseUrl(url: string, field: string): { host: HostPort; tls: boolean; db: number; username?: string; password?: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw invalidParameter(field, 'a redis:// or rediss:// URL', url);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw invalidParameter(field, 'a redis:// or rediss:// URL', url);
  if (u.hostname === '') throw invalidParameter(field, 'a URL with a host', url);
  const port = u.port === '' ? 6379 : Number(u.port);
  const path = u.pathname.replace(/^\//, '');
  const db = path === '' ? 0 : Number(path);
  if (!Number.isSafeInteger(db) || db < 0) throw invalidParameter(`${field} database`, 'a non-negative integer', path);
  // URL keeps IPv6 hosts bracketed; the socket wants them bare.
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  const out: { host: HostPort; tls: boolean; db: number; username?: string; password?: string } = { host: { host, port }, tls: u.protocol === 'rediss:', db };
  if (u.username !== '') out.username = decodeURIComponent(u.username);
  if (u.password !== '') out.password = decodeURIComponent(u.password);
  return out;
}

function parseNode(s: unknown, field: string): HostPort {
  if (typeof s !== 'string') throw invalidParameter(field, "'host:port' or a redis:// URL", s);
  if (s.startsWith('redis://') || s.startsWith('rediss://')) return parseUrl(s, field).host;
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) throw invalidParameter(field, "'host:port' or a redis:// URL", s);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port };
}

/** Checks `o` (E_OPTIONS naming the field at fault) and fills in the defaults. */
export function resolveRemoteOptions(o: unknown, field = 'options'): ResolvedRemoteOptions {
  if (typeof o !== 'object' || o === null) throw invalidParameter(field, 'an object', o);
  checkKeys(o, KNOWN, field);
  const r = o as RemoteOptions;
  if (typeof r.url !== 'string') throw invalidParameter(`${field}.url`, 'a redis:// or rediss:// URL', r.url);
  const url = parseUrl(r.url, `${field}.url`);
  let cluster = false;
  let nodes = [url.host];
  if (r.cluster !== undefined && r.cluster !== false) {
    cluster = true;
    if (r.cluster !== true) {
      if (typeof r.cluster !== 'object' || r.cluster === null || !Array.isArray(r.cluster.nodes) || r.cluster.nodes.length === 0) {
        throw invalidParameter(`${field}.cluster`, 'a boolean or { nodes: string[] } with at least one node', r.cluster);
      }
      checkKeys(r.cluster, ['nodes'], `${field}.cluster`);
      nodes = r.cluster.nodes.map((n, i) => parseNode(n, `${field}.cluster.nodes[${i}]`));
    }
    if (url.db !== 0) throw new KvtcError('E_OPTIONS', `${field}.url names database ${url.db}, but a cluster has only database 0`);
  }
  let tls: ConnectionOptions | undefined;
  if (r.tls !== undefined && typeof r.tls !== 'boolean' && (typeof r.tls !== 'object' || r.tls === null)) {
    throw invalidParameter(`${field}.tls`, 'a boolean or node:tls connection options', r.tls);
  }
  if (typeof r.tls === 'object') tls = r.tls;
  else if (r.tls === true || (r.tls === undefined && url.tls)) tls = {};
  for (const k of ['username', 'password'] as const) {
    if (r[k] !== undefined && typeof r[k] !== 'string') throw invalidParameter(`${field}.${k}`, 'a string', r[k]);
  }
  if (r.waitForReady !== undefined && typeof r.waitForReady !== 'boolean') throw invalidParameter(`${field}.waitForReady`, 'a boolean', r.waitForReady);
  if (r.capacityBytes !== undefined && (typeof r.capacityBytes !== 'number' || !Number.isSafeInteger(r.capacityBytes) || r.capacityBytes <= 0)) {
    throw invalidParameter(`${field}.capacityBytes`, 'a positive integer', r.capacityBytes);
  }
  return {
    nodes,
    cluster,
    db: url.db,
    namespace: r.namespace === undefined ? 'default' : checkNamespace(r.namespace, `${field}.namespace`),
    capacityBytes: r.capacityBytes,
    ttlMs: positiveInt(r.ttlMs, `${field}.ttlMs`, MAX_MS, 86_400_000),
    tls,
    username: r.username ?? url.username,
    password: r.password ?? url.password,
    timeoutMs: positiveInt(r.timeoutMs, `${field}.timeoutMs`, 600_000, 1000),
    putTimeoutMs: positiveInt(r.putTimeoutMs, `${field}.putTimeoutMs`, 3_600_000, 10_000),
    connectTimeoutMs: positiveInt(r.connectTimeoutMs, `${field}.connectTimeoutMs`, 600_000, 2000),
    waitForReady: r.waitForReady ?? true,
    leaseGraceMs: positiveInt(r.leaseGraceMs, `${field}.leaseGraceMs`, MAX_MS, 600_000),
    maxInFlight: positiveInt(r.maxInFlight, `${field}.maxInFlight`, 4096, 32),
  };
}

/** Checks a per-put TTL override. */
export function checkTtl(v: unknown, field: string): number {
  return positiveInt(v, field, MAX_MS, 0);
}
