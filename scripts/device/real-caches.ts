/**
 * Writes the GPU parity test's real stories260K caches to a file (argv[2]) for the GPU machine,
 * which cannot run the model. Called by pack.sh.
 */
import { parityCaches, saveCaches } from '../../test/helpers/real-kv-file.js';
import { disposeModel } from '../../test/helpers/real-kv.js';

delete process.env.KVTC_REAL_CACHES; // always from the model
const caches = await parityCaches();
saveCaches(process.argv[2]!, caches);
await disposeModel();
console.log(`wrote ${caches.length} real caches to ${process.argv[2]}`);
