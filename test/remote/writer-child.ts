/**
 * A separate process that writes one test session through its own RemoteTier, then exits:
 * `node --import tsx test/remote/writer-child.ts '<json>'` with { url, namespace, fingerprint, id,
 * seed, chunks, bytes, maxInFlight }. Prints 'connected' once connected and 'done' once the put
 * resolved, so a parent can kill it in between.
 */
import { RemoteTier } from '../../src/store/remote-tier.js';
import { makeSession } from '../helpers/remote-session.js';

const a = JSON.parse(process.argv[2]!) as { url: string; namespace: string; fingerprint: string; id: string; seed: number; chunks: number; bytes: number; maxInFlight: number };
const tier = await RemoteTier.connect({ url: a.url, namespace: a.namespace, maxInFlight: a.maxInFlight, putTimeoutMs: 120_000, timeoutMs: 120_000 }, a.fingerprint);
const s = makeSession(a.seed, a.chunks, a.bytes);
process.stdout.write('connected\n');
await tier.putSession(a.id, s.manifest, s.chunks);
process.stdout.write('done\n');
await tier.close();
