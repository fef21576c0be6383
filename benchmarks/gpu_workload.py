"""The original design's full workload on random-weight Gemma-2-2b-sized models, on one GPU.

    python benchmarks/gpu_workload.py            # full: 5 models x 15 prompts; 4 x 15 x 234 patches
    python benchmarks/gpu_workload.py --quick    # 2 prompts per stage, extrapolated (< 3 min)

Five models (a base and four "fine-tuned" copies with rank-64 perturbations of every
linear layer, as merged LoRA adapters are) with Gemma-2-2b's shapes (26 layers, d_model
2304, 8 heads of dim 256, 4 key/value heads, MLP 9216, vocab 256000, both softcaps,
alternating sliding-window attention) in bfloat16. Stages, timed separately:
  1. activations + logit lens + DLA: 5 models x N prompts (run_with_cache, the cache's
     arrays, the lens trajectory and the attribution from them);
  2. exact patching, all positions: 4 experiments x N prompts x 234 components.
Needs torch, transformers, numpy, h5py and pandas (imported by interp_lib), nothing else.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp_lib.cache import collect_variant  # noqa: E402
from interp_lib.dla import dla_from_arrays  # noqa: E402
from interp_lib.hooked import HookedModel  # noqa: E402
from interp_lib.logit_lens import ActionReadout, trajectory_from_arrays  # noqa: E402
from interp_lib.patching import PatchRunner, PromptActivations, sweep  # noqa: E402

TOKENS = {"C": 235274, "D": 235284, "prefix": [2314]}
EXPERIMENTS = [(1, 2), (1, 3), (2, 3), (3, 2)]  # PT2->PT3De, PT2->PT3Ut, PT3De->PT3Ut, PT3Ut->PT3De


def gemma2_2b_config(n_layers: int):
    from transformers import Gemma2Config

    return Gemma2Config(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=n_layers,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=4096,
                        query_pre_attn_scalar=256, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                        max_position_embeddings=8192, attn_implementation="eager")


def build_models(n_layers: int, device: str, dtype, sliding_window: int | None = None):
    from transformers import Gemma2ForCausalLM

    cfg = gemma2_2b_config(n_layers)
    if sliding_window:
        cfg.sliding_window = sliding_window
    torch.manual_seed(0)
    with torch.device(device):
        base = Gemma2ForCausalLM(cfg).to(dtype).eval()
    models = [base]
    for i in range(4):
        gen = torch.Generator(device=device).manual_seed(i + 1)
        with torch.device(device):
            m = Gemma2ForCausalLM(cfg).to(dtype).eval()
        with torch.no_grad():
            for (name, p), (_, q) in zip(m.named_parameters(), base.named_parameters()):
                p.copy_(q)
                if p.ndim == 2 and "proj" in name:  # a merged rank-64 LoRA update
                    a = torch.randn(p.shape[0], 64, device=device, generator=gen, dtype=torch.float32)
                    b = torch.randn(64, p.shape[1], device=device, generator=gen, dtype=torch.float32)
                    p.add_((0.02 / 64 ** 0.5 * a @ b * 0.02).to(dtype))
        models.append(m)
    return [HookedModel(m, name=f"model{i}") for i, m in enumerate(models)]


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 prompts per stage, extrapolated to 15")
    ap.add_argument("--prompts", type=int, default=15)
    ap.add_argument("--layers", type=int, default=26)
    ap.add_argument("--seq-len", type=int, default=210, help="prompt length in tokens (the real prompts: ~200)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--batch-size", type=int, default=64, help="patches per forward pass")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    dtype = getattr(torch, args.dtype)
    n_run = 2 if args.quick else args.prompts
    device = args.device
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, {args.dtype}, {args.layers} layers, "
          f"{args.seq_len} tokens, {n_run} of {args.prompts} prompts per stage", flush=True)

    t0 = time.perf_counter()
    models = build_models(args.layers, device, dtype, sliding_window=min(4096, args.seq_len // 2))
    sync(device)
    t_build = time.perf_counter() - t0
    print(f"built 5 models in {t_build:.1f} s", flush=True)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, 256000, (1, args.seq_len), generator=gen).to(device) for _ in range(n_run)]

    # Stage 1: activations + logit lens + DLA
    sync(device)
    t0 = time.perf_counter()
    max_err = 0.0
    for model in models:
        readout = ActionReadout.from_model(model, TOKENS)
        for ids in prompts:
            data = collect_variant(model, ids, TOKENS)
            trajectory_from_arrays(data["arrays"], data["attrs"], readout)
            result = dla_from_arrays(data["arrays"], data["attrs"], readout)
            max_err = max(max_err, abs(result.reconstruction_error))
    sync(device)
    t_stage1 = time.perf_counter() - t0
    per1 = t_stage1 / (len(models) * n_run)
    print(f"stage 1 (activations + logit lens + DLA): {t_stage1:.1f} s for {len(models) * n_run} model-prompts "
          f"= {per1:.2f} s each; DLA reconstruction error max {max_err:.3g} ({args.dtype} model, float32 cache)",
          flush=True)

    # Stage 2: exact patching, all positions
    sync(device)
    t0 = time.perf_counter()
    n_patches = 0
    for src_i, tgt_i in EXPERIMENTS:
        source, target = models[src_i], models[tgt_i]
        W_O = torch.stack([source.W_O(l) for l in range(source.n_layers)])
        runner = PatchRunner(target, W_O, TOKENS, "all", "result", batch_size=args.batch_size)
        for ids in prompts:
            src = PromptActivations.from_run(source, ids, TOKENS)
            tgt = PromptActivations.from_run(target, ids, TOKENS)
            n_patches += len(sweep(runner, src, tgt))
    sync(device)
    t_stage2 = time.perf_counter() - t0
    per2 = t_stage2 / (len(EXPERIMENTS) * n_run)
    print(f"stage 2 (exact patching, all positions): {t_stage2:.1f} s for {n_patches} patches "
          f"({len(EXPERIMENTS) * n_run} experiment-prompts) = {per2:.2f} s per prompt", flush=True)

    full1 = per1 * len(models) * args.prompts
    full2 = per2 * len(EXPERIMENTS) * args.prompts
    label = "extrapolated" if n_run != args.prompts else "measured"
    print(f"full workload ({label}): stage 1 {full1:.1f} s, stage 2 {full2:.1f} s, total {full1 + full2:.1f} s "
          f"(+ {t_build:.0f} s building models); the original implementation: 2-4 h for patching alone")
    if device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
