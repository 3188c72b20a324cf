"""Recompute baseline for bench/gpu.bench.ts: the prefill a serving process runs when it has no
cache to restore. A Llama-3.1-8B-shaped model (random bf16 weights cost the same as real ones)
processes 8192 tokens at batch 1 and 8 with PyTorch's SDPA attention, producing the KV cache;
the median of 3 timed runs after a warm-up is written as JSON to argv[1].
Needs PyTorch and transformers (the device machine has both)."""
import json
import sys
import time

import torch
from transformers import LlamaConfig, LlamaModel

TOKENS = 8192


def main(out_path: str) -> None:
    config = LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, max_position_embeddings=131072,
        rope_theta=500000.0, attn_implementation="sdpa",
    )
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaModel(config).eval()  # no LM head: the prefill's cost is the transformer
    results = []
    for batch in (1, 8):
        ids = torch.randint(0, config.vocab_size, (batch, TOKENS), device="cuda")
        times = []
        with torch.no_grad():
            for i in range(4):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = model(input_ids=ids, use_cache=True)
                torch.cuda.synchronize()
                if i > 0:
                    times.append((time.perf_counter() - t0) * 1e3)
                del out
        times.sort()
        results.append({"batch": batch, "tokens": TOKENS, "ms": times[len(times) // 2]})
        print(f"prefill batch {batch} x {TOKENS} tokens: {results[-1]['ms']:.1f} ms", flush=True)
    with open(out_path, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "results": results}, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "recompute.json")
