/**
 * Imported first by the test files that compare CPU decodes against the FP32 decoder's exact
 * results (the CUDA decoder's emulation, fixtures hashed from FP32 decodes, the SIMD paths'
 * agreement, level tables against uniform steps): their process decodes on the FP32 path, not
 * the int8 one that is the default on AVX-512 VNNI CPUs (test/native/int8-decode.test.ts covers
 * that). KVTC_DECODE is read once per process, at the first profile load or decode; each test
 * file runs in a process of its own (vitest pool 'forks').
 */
process.env.KVTC_DECODE = 'f32';
