/**
 * node-llama-cpp models as kvtc sees them: loading one without ever compiling or downloading,
 * and the KvLayout of its KV cache read from the GGUF metadata. node-llama-cpp is an optional
 * peer dependency, imported only when these functions run.
 */
import { KvtcError } from '../../errors.js';
import type { DType, KvLayout } from '../../layout.js';
import type { Llama, LlamaModel } from 'node-llama-cpp';

export interface LoadedModel {
  llama: Llama;
  model: LlamaModel;
  /** Frees the model and the llama.cpp instance. */
  dispose(): Promise<void>;
}

/** Loads a GGUF model on the CPU with node-llama-cpp's prebuilt binaries (never builds, never downloads). */
export async function loadLlamaModel(modelPath: string): Promise<LoadedModel> {
  let lib: typeof import('node-llama-cpp');
  try {
    lib = await import('node-llama-cpp');
  } catch (err) {
    throw new KvtcError('E_BACKEND', 'node-llama-cpp is not installed (npm install node-llama-cpp@3.21.1)', { cause: err });
  }
  const llama = await lib.getLlama({
    gpu: false,
    build: 'never',
    skipDownload: true,
    usePrebuiltBinaries: true,
    progressLogs: false,
    logLevel: lib.LlamaLogLevel.error,
    logger: (level, message) => {
      if (level === lib.LlamaLogLevel.error || level === lib.LlamaLogLevel.fatal) console.error(`[llama.cpp] ${message}`);
    },
  });
  try {
    const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
    return {
      llama,
      model,
      dispose: async () => {
        await model.dispose();
        await llama.dispose();
      },
    };
  } catch (err) {
    await llama.dispose();
    throw new KvtcError('E_IO', `cannot load model ${modelPath}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The KV layout of a llama-architecture model from its GGUF metadata: layers, KV heads, head
 * size, and RoPE (llama.cpp's normal mode rotates adjacent pairs: 'interleaved').
 */
export function modelKvLayout(model: LlamaModel, dtype: DType = 'f16'): KvLayout {
  const meta = model.fileInfo.metadata as unknown as Record<string, unknown> & { general?: { architecture?: string } };
  const arch = meta.general?.architecture ?? 'llama';
  const a = meta[arch] as
    | {
        block_count?: number;
        embedding_length?: number;
        attention?: { head_count?: number; head_count_kv?: number | number[]; key_length?: number };
        rope?: { dimension_count?: number; freq_base?: number };
      }
    | undefined;
  const layers = a?.block_count;
  const heads = a?.attention?.head_count;
  const kv = a?.attention?.head_count_kv ?? heads;
  const kvHeads = Array.isArray(kv) ? kv[0] : kv;
  const headDim = a?.attention?.key_length ?? (a?.embedding_length && heads ? a.embedding_length / heads : undefined);
  if (!layers || !kvHeads || !headDim || !Number.isInteger(headDim)) {
    throw new KvtcError('E_LAYOUT', `cannot derive a KV layout from the metadata of this ${arch} model; pass a layout explicitly`);
  }
  if (Array.isArray(kv) && kv.some((x) => x !== kvHeads)) {
    throw new KvtcError('E_LAYOUT', 'models whose layers have different KV head counts are not supported');
  }
  return {
    layers,
    kvHeads,
    headDim,
    dtype,
    rope: { theta: a?.rope?.freq_base ?? 10000, style: 'interleaved', dims: a?.rope?.dimension_count ?? headDim },
  };
}
