/**
 * The remote tier's Lua scripts. Each touches exactly one key, so each runs atomically on the
 * shard that owns that key, in a single node and in Redis Cluster alike (a script may only touch
 * keys of one hash slot there). Leases are only ever lengthened by these scripts, never
 * shortened: a key's remaining time is the longest lease any writer or reader asked for, which is
 * what makes the lease scheme in remote-tier.ts safe with many writers.
 *
 * PTTL answers -2 for a missing key and -1 for a key without expiry (left without one).
 *
 * Values themselves never pass through a script (chunks are written with SET NX and read with
 * GET, each pipelined with a renewal): a script copies its arguments and replies into Lua strings,
 * which is slower for large values: sessions of 4 x 2 MB chunks read on loopback took p50 12.3 ms
 * with GET + renewal against 28.2 ms through one script (bench/remote.bench.ts ablation, 2-core
 * AMD EPYC under a load average of ~8, Redis 7.0.15).
 */
import type { Cluster, Redis } from 'ioredis';

/** Name -> Lua source; every script takes one key. */
const SCRIPTS = {
  /** ARGV: leaseMs. Lengthens the key's lease to leaseMs if shorter; 1 if the key exists, else 0. */
  kvtcRenew: `
local t = redis.call('PTTL', KEYS[1])
if t == -2 then return 0 end
local lease = tonumber(ARGV[1])
if t >= 0 and t < lease then redis.call('PEXPIRE', KEYS[1], lease) end
return 1`,

  /**
   * ARGV: leaseMs, byteLength, last four bytes. Lengthens the lease of a manifest only if it is
   * still the one the caller read (same length, same trailing CRC): a manifest replaced meanwhile by
   * another writer keeps the lease its own writer gave it. 1 if renewed or already long enough.
   */
  kvtcRenewIfSame: `
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if string.len(v) ~= tonumber(ARGV[2]) or string.sub(v, -4) ~= ARGV[3] then return 0 end
local t = redis.call('PTTL', KEYS[1])
local lease = tonumber(ARGV[1])
if t >= 0 and t < lease then redis.call('PEXPIRE', KEYS[1], lease) end
return 1`,

  /** ARGV: bytes. Deletes the key only if it still holds exactly these bytes (a bad value found by a reader); 1 if deleted. */
  kvtcDeleteIfEqual: `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`,
} as const;

/** The scripted commands ioredis adds to a client (and their Buffer-returning variants). */
export interface ScriptedCommands {
  kvtcRenew(key: string, leaseMs: number): Promise<number>;
  kvtcRenewIfSame(key: string, leaseMs: number, byteLength: number, tail: Uint8Array): Promise<number>;
  kvtcDeleteIfEqual(key: string, bytes: Uint8Array): Promise<number>;
}

/** Registers the scripts on `client` (EVALSHA, falling back to EVAL once per node when the script is not cached there). */
export function defineScripts(client: Redis | Cluster): ScriptedCommands {
  for (const [name, lua] of Object.entries(SCRIPTS)) client.defineCommand(name, { lua, numberOfKeys: 1 });
  return client as unknown as ScriptedCommands;
}
