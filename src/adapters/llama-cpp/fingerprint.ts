/**
 * A model's identity for binding KV caches to it: a cache computed by one model is garbage to
 * another of the same shape (a fine-tune, another quantization), and nothing in the cache says
 * so. The fingerprint hashes the GGUF header (metadata and tensor infos: architecture,
 * hyperparameters, vocabulary, tensor names, types and offsets) and samples of every tensor's
 * data (its first, middle and last KiB), so it costs a few reads per tensor rather than a pass
 * over gigabytes. Two files with identical headers whose weights differ only outside the sampled
 * KiB would collide; any retraining or requantization of a tensor changes its samples.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { LlamaModel } from 'node-llama-cpp';
import { KvtcError } from '../../errors.js';

const SAMPLE = 1024;

/** Model files kvtc loaded (loadLlamaModel) or was told about, by model. */
const modelPaths = new WeakMap<LlamaModel, string>();
const cache = new WeakMap<LlamaModel, Promise<string>>();

/** Records the file a model was loaded from (loadLlamaModel does this). */
export function rememberModelPath(model: LlamaModel, path: string): void {
  modelPaths.set(model, path);
}

/** The file a node-llama-cpp model was loaded from. */
export function modelPathOf(model: LlamaModel): string | undefined {
  // node-llama-cpp 3.x keeps the resolved path on the instance without a public getter.
  return modelPaths.get(model) ?? (typeof (model as unknown as { _modelPath?: unknown })._modelPath === 'string' ? (model as unknown as { _modelPath: string })._modelPath : undefined);
}

/**
 * The fingerprint (32 hex digits, 128 bits of SHA-256) of a single-file GGUF model.
 * @throws KvtcError E_IO when the file cannot be read, E_LAYOUT when it is not a GGUF file.
 */
export async function modelFingerprint(path: string): Promise<string> {
  let lib: typeof import('node-llama-cpp');
  try {
    lib = await import('node-llama-cpp');
  } catch (err) {
    throw new KvtcError('E_BACKEND', 'node-llama-cpp is not installed', { cause: err });
  }
  let info: Awaited<ReturnType<typeof lib.readGgufFileInfo>>;
  try {
    info = await lib.readGgufFileInfo(path, { readTensorInfo: true, logWarnings: false, sourceType: 'filesystem' });
  } catch (err) {
    throw new KvtcError('E_LAYOUT', `${path} is not a readable GGUF file: ${(err as Error).message}`, { cause: err });
  }
  const fh = await open(path, 'r').catch((err: unknown) => {
    throw new KvtcError('E_IO', `cannot open ${path}: ${(err as Error).message}`, { cause: err });
  });
  try {
    const { size } = await fh.stat();
    const hash = createHash('sha256').update('kvtc-gguf-fingerprint-v1\0');
    const read = async (offset: number, length: number): Promise<Buffer> => {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      return buf.subarray(0, bytesRead);
    };
    // The header: everything before the tensor data (metadata and tensor infos, raw bytes).
    const tensors = (info.fullTensorInfo ?? info.tensorInfo ?? [])
      .filter((t) => (t.filePart ?? 1) === 1)
      .map((t) => ({ name: t.name, at: Number(t.fileOffset) }))
      .sort((x, y) => x.at - y.at);
    const dataStart = tensors.length > 0 ? tensors[0]!.at : size;
    hash.update(await read(0, dataStart));
    // Each tensor's extent runs to the next tensor (or the end of the file), padding included.
    for (let i = 0; i < tensors.length; i++) {
      const start = tensors[i]!.at;
      const end = i + 1 < tensors.length ? tensors[i + 1]!.at : size;
      const len = Math.max(0, end - start);
      if (len <= 3 * SAMPLE) {
        hash.update(await read(start, len));
      } else {
        hash.update(await read(start, SAMPLE));
        hash.update(await read(start + Math.floor(len / 2) - SAMPLE / 2, SAMPLE));
        hash.update(await read(end - SAMPLE, SAMPLE));
      }
    }
    return hash.digest('hex').slice(0, 32);
  } finally {
    await fh.close();
  }
}

/** The fingerprint of a loaded model (computed once per model). */
export function fingerprintOf(model: LlamaModel): Promise<string> {
  let p = cache.get(model);
  if (!p) {
    const path = modelPathOf(model);
    if (!path) return Promise.reject(new KvtcError('E_OPTIONS', 'the model file of this LlamaModel is unknown; load it with loadLlamaModel'));
    p = modelFingerprint(path);
    p.catch(() => cache.delete(model));
    cache.set(model, p);
  }
  return p;
}
