// Child of the kill -9 test: runs puts (of sessions sharing prefix chunks), evictions
// (write-through), gets and deletes on a store
// forever, printing a line each time an operation that persists has resolved. The parent kills
// it with SIGKILL at a random moment and checks what survived.
import { CodecProfile, KvStore } from '../../dist/index.js';
import { sharedFixture } from './fixture.mjs';

const [path, profilePath, first] = process.argv.slice(2);
const profile = await CodecProfile.load(profilePath);
const store = await KvStore.open({
  profile,
  path,
  writePolicy: 'write-through',
  tiers: { device: { capacityBytes: 3 * 2 * 2 * 96 * 32 * 4, idleMs: 0 }, host: { capacityBytes: 20_000, idleMs: 0 } },
  workers: { minThreads: 1, maxThreads: 2 },
  chunkTokens: 16, // sessions share their first chunks (sharedFixture): refcounts are under test too
});
const say = (line) => process.stdout.write(`${line}\n`);
say('READY');
const acked = [];
for (let i = Number(first); ; i++) {
  const id = `s${i}`;
  const { cache, tokens } = sharedFixture(i);
  await store.put(id, cache, { tokens });
  await store.evict(id, { to: i % 3 === 0 ? 'disk' : 'host' });
  say(`ACK ${id} ${i}`); // persisted: write-through demotion, or a spill to disk
  acked.push(id);
  if (i % 4 === 0) await store.get(acked[(i * 7) % acked.length]);
  if (i % 9 === 0 && acked.length > 3) {
    const victim = acked.splice((i * 5) % acked.length, 1)[0];
    say(`DELETING ${victim}`);
    await store.delete(victim);
    say(`DELETED ${victim}`);
  }
}
