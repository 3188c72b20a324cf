/**
 * node-llama-cpp models as kvtc sees them: loading one without ever compiling or downloading,
 * and the KvLayout of its KV cache read from the GGUF metadata. node-llama-cpp is an optional
 * peer dependency, imported only when these functions run.
 */
import { resolve } from 'node:path';
import { KvtcError } from '../../errors.js';
import type { DType, KvLayout } from '../../layout.js';
import type { Llama, LlamaModel } from 'node-llama-cpp';
import { type GgufInfoLike, kvLayoutFromGguf } from './architecture.js';
import { modelPathOf, rememberModelPath } from './fingerprint.js';

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
    rememberModelPath(model, resolve(modelPath));
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
 * The KV layout of a model (or of a GGUF file's info, from node-llama-cpp's readGgufFileInfo):
 * layers, KV heads, head size and RoPE as llama.cpp applies it for the architecture (see
 * architecture.ts). Throws E_LAYOUT, naming the reason, for caches kvtc cannot represent.
 */
export function modelKvLayout(model: LlamaModel | GgufInfoLike, dtype: DType = 'f16'): KvLayout {
  if ('fileInfo' in model) return kvLayoutFromGguf(model.fileInfo, dtype, modelPathOf(model));
  return kvLayoutFromGguf(model, dtype);
}
