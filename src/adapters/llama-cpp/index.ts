/**
 * kvtc/llama-cpp: node-llama-cpp integration. Importing this entry loads node-llama-cpp lazily
 * (only the functions that need a model import it); `import 'kvtc'` never does.
 */
export { loadLlamaModel, modelKvLayout, type LoadedModel } from './model.js';
export { saveSequence, restoreSequence, restorePrefix, type RestoreOptions } from './session.js';
export { assertRepresentable, kvLayoutFromGguf, ggufArchitecture, type GgufInfoLike } from './architecture.js';
export { modelFingerprint, fingerprintOf } from './fingerprint.js';
export { bindProfileToModel, profileModel } from './profile-binding.js';
export {
  calibrateFromModel,
  collectStates,
  createContext,
  withPromptSequence,
  type CalibrateFromModelOptions,
  type CollectOptions,
  type ContextSettings,
  type KvCacheType,
} from './collect.js';
export {
  compareDistributions,
  greedyContinue,
  klDivergence,
  makeProbe,
  nextTokenDistributions,
  probeFidelity,
  resumeWith,
  type FidelityProbe,
  type NextTokenComparison,
} from './fidelity.js';
export { readSequenceFile, readSequenceState, stateTempBase, writeSequenceStateTo } from './sequence-state.js';
export { parseSequenceState, writeSequenceState, type LlamaSequenceState } from './state.js';
