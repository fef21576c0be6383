"""The original design's full workload on random-weight Gemma-2-2b-sized models, per precision mode.

    python benchmarks/gpu_workload.py                    # every mode: 5 models x 15 prompts; 4 x 15 x 234 patches
    python benchmarks/gpu_workload.py --modes bfloat16   # one mode (float32 always runs too: the reference)
    python benchmarks/gpu_workload.py --quick            # 2 prompts per stage, extrapolated
    python benchmarks/gpu_workload.py --device cpu --layers 2 --vocab 4096 --seq-len 64 --quick   # CI smoke test

Five models (a base and four "fine-tuned" copies with rank-64 perturbations of every
linear layer, as merged LoRA adapters are) with Gemma-2-2b's shapes (26 layers, d_model
2304, 8 heads of dim 256, 4 key/value heads, MLP 9216, vocab 256000, both softcaps,
alternating sliding-window attention). Every weight is rounded to bfloat16 once, so all
modes (interp_lib/precision.py) run the same weights and differ only in how they compute.
Per mode, timed separately:
  1. activations + logit lens + DLA: 5 models x N prompts (run_with_cache, the cache's
     arrays, the lens trajectory and the attribution from them);
  2. exact patching, all positions: 4 experiments x N prompts x 234 components, plus each
     prompt's noise floor (patching.noise_floor: the unpatched recompute and a self-patch
     per layer, as every workflow patching job runs them).
Then each mode's delta_change is compared with float32's on the same prompts: Spearman
rank correlation and the overlap of the top 10 by |delta_change| (the worst prompt's).
The last line names the fastest mode with Spearman >= 0.99 and top-10 overlap 10/10.
On a CPU, tf32 is float32; `--emulate-tf32` then rounds every float32 matmul input to
TF32's 10-bit mantissa (round to nearest) to estimate its numerics (not its speed).
Needs torch, transformers, numpy, scipy, h5py and pandas (imported by interp_lib), nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp_lib.cache import collect_variant  # noqa: E402
from interp_lib.dla import dla_from_arrays  # noqa: E402
from interp_lib.hooked import HookedModel  # noqa: E402
from interp_lib.logit_lens import ActionReadout, trajectory_from_arrays  # noqa: E402
from interp_lib.patching import PatchRunner, PromptActivations, noise_floor, own_W_O, sweep  # noqa: E402
from interp_lib.precision import PRECISIONS, get_precision  # noqa: E402

EXPERIMENTS = [(1, 2), (1, 3), (2, 3), (3, 2)]  # PT2->PT3De, PT2->PT3Ut, PT3De->PT3Ut, PT3Ut->PT3De
DEFAULT_MODES = ("float32", "tf32", "bfloat16", "bfloat16-resid32")
MIN_SPEARMAN, TOP_K = 0.99, 10


def gemma2_2b_config(n_layers: int, vocab: int = 256000, sliding_window: int = 4096):
    from transformers import Gemma2Config

    return Gemma2Config(vocab_size=vocab, hidden_size=2304, intermediate_size=9216, num_hidden_layers=n_layers,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=sliding_window,
                        query_pre_attn_scalar=256, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                        max_position_embeddings=8192, attn_implementation="eager")


def _round_to_bfloat16(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())


def build_models(n_layers: int, device: str, mode, vocab: int = 256000, sliding_window: int = 4096):
    """Five HookedModels in `mode`, the same bfloat16-representable weights whatever the mode;
    they share one embedding (tied unembedding) tensor."""
    from transformers import Gemma2ForCausalLM

    mode = get_precision(mode)
    torch.manual_seed(0)
    with torch.device(device):
        base = Gemma2ForCausalLM(gemma2_2b_config(n_layers, vocab, sliding_window)).eval()
    _round_to_bfloat16(base)
    embedding = base.model.embed_tokens.weight
    models = []
    for i in range(4):
        m = copy.deepcopy(base, memo={id(embedding): embedding})
        gen = torch.Generator(device=device).manual_seed(i + 1)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if p.ndim == 2 and "proj" in name:  # a merged rank-64 LoRA update
                    a = torch.randn(p.shape[0], 64, device=device, generator=gen)
                    b = torch.randn(64, p.shape[1], device=device, generator=gen)
                    p.add_(0.02 / 64 ** 0.5 * a @ b * 0.02)
        _round_to_bfloat16(m)
        models.append(m.to(mode.weights))
    models.insert(0, base.to(mode.weights))
    return [HookedModel(m, name=f"model{i}", precision=mode) for i, m in enumerate(models)]


def round_to_tf32(x):
    """float32 tensors rounded to TF32's 10-bit mantissa (to nearest, ties to even); others as they are."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        return x
    bits = x.contiguous().view(torch.int32)
    bits = (bits + 0x0FFF + ((bits >> 13) & 1)) & ~0x1FFF
    return bits.view(torch.float32)


class EmulatedTF32(torch.overrides.TorchFunctionMode):
    """Inside this mode, float32 matrix products see TF32-rounded inputs (float32 accumulation
    and output, as tensor cores do)."""

    OPS = {torch.nn.functional.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__,
           torch.einsum, torch.mm, torch.bmm, torch.Tensor.mm, torch.Tensor.bmm}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.OPS:
            args = tuple([round_to_tf32(t) for t in a] if isinstance(a, (list, tuple)) else round_to_tf32(a)
                         for a in args)
        return func(*args, **kwargs)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_mode(mode, args, prompts, tokens) -> dict:
    """Builds the models in `mode`, runs both stages, returns timings, errors and every
    (experiment, prompt)'s delta_change array."""
    device = args.device
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    models = build_models(args.layers, device, mode, args.vocab, sliding_window=min(4096, args.seq_len // 2))
    sync(device)
    out = {"build": time.perf_counter() - t0, "changes": {}, "floors": []}
    emulate = args.emulate_tf32 and mode.tf32 and not device.startswith("cuda")
    with mode.matmuls(), EmulatedTF32() if emulate else contextlib.nullcontext():
        sync(device)
        t0 = time.perf_counter()
        max_err = 0.0
        for model in models:
            readout = ActionReadout.from_model(model, tokens)
            for ids in prompts:
                data = collect_variant(model, ids, tokens)
                trajectory_from_arrays(data["arrays"], data["attrs"], readout)
                result = dla_from_arrays(data["arrays"], data["attrs"], readout)
                max_err = max(max_err, abs(result.reconstruction_error))
        sync(device)
        out["stage1"], out["dla_error"] = time.perf_counter() - t0, max_err

        t0 = time.perf_counter()
        for e, (src_i, tgt_i) in enumerate(EXPERIMENTS):
            source, target = models[src_i], models[tgt_i]
            runner = PatchRunner(target, own_W_O(source), tokens, "all", "result", batch_size=args.batch_size)
            target_W_O = own_W_O(target)
            for p, ids in enumerate(prompts):
                src = PromptActivations.from_run(source, ids, tokens)
                tgt = PromptActivations.from_run(target, ids, tokens)
                controls: list = []
                out["changes"][e, p] = np.array([r.delta_change for r in sweep(runner, src, tgt, controls)])
                out["floors"].append(noise_floor(runner, tgt, target_W_O, controls))
        sync(device)
        out["stage2"] = time.perf_counter() - t0
    out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    del models
    return out


def agreement(changes: dict, reference: dict) -> tuple[float, float, int, float]:
    """(min Spearman, mean Spearman, min top-k overlap, max |delta_change - reference|) over prompts."""
    from scipy.stats import spearmanr

    rhos, overlaps, diffs = [], [], []
    for key, ref in reference.items():
        got = changes[key]
        rhos.append(spearmanr(got, ref).statistic)
        top = lambda x: set(np.argsort(-np.abs(x), kind="stable")[:TOP_K])  # noqa: E731
        overlaps.append(len(top(got) & top(ref)))
        diffs.append(np.abs(got - ref).max())
    return float(np.min(rhos)), float(np.mean(rhos)), int(np.min(overlaps)), float(np.max(diffs))


@torch.no_grad()  # a scoped switch: callers (tests) keep their grad mode
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES),
                    help=f"comma-separated precision modes (of {', '.join(PRECISIONS)}); float32 always runs")
    ap.add_argument("--quick", action="store_true", help="2 prompts per stage, extrapolated to --prompts")
    ap.add_argument("--prompts", type=int, default=15)
    ap.add_argument("--layers", type=int, default=26)
    ap.add_argument("--vocab", type=int, default=256000, help="vocabulary size (Gemma-2: 256000)")
    ap.add_argument("--seq-len", type=int, default=210, help="prompt length in tokens (the real prompts: ~200)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=64, help="patches per forward pass")
    ap.add_argument("--emulate-tf32", action="store_true",
                    help="on a CPU, run tf32 with matmul inputs rounded to TF32 (numerics only)")
    args = ap.parse_args(argv)
    modes = [get_precision(m) for m in dict.fromkeys(["float32", *args.modes.split(",")])]
    n_run = 2 if args.quick else args.prompts
    device = args.device
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    print(f"device {device} ({name}, {torch.get_num_threads()} CPU threads), torch {torch.__version__}, "
          f"{args.layers} layers, vocab {args.vocab}, {args.seq_len} tokens, {n_run} of {args.prompts} prompts per "
          f"stage; modes {', '.join(m.name for m in modes)}"
          + ("; tf32 emulated (inputs rounded)" if args.emulate_tf32 and not device.startswith("cuda") else ""),
          flush=True)
    tokens = {"C": min(235274, args.vocab - 2), "D": min(235284, args.vocab - 1), "prefix": [1]}
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, args.vocab, (1, args.seq_len), generator=gen).to(device) for _ in range(n_run)]

    results = {}
    for mode in modes:
        r = results[mode.name] = run_mode(mode, args, prompts, tokens)
        print(f"  {mode.name}: built in {r['build']:.1f} s, stage 1 {r['stage1']:.1f} s, stage 2 {r['stage2']:.1f} s",
              flush=True)
    scale1, scale2 = 5 * args.prompts / (5 * n_run), len(EXPERIMENTS) * args.prompts / (len(EXPERIMENTS) * n_run)
    label = "extrapolated to" if n_run != args.prompts else "measured on"
    print(f"\nfull workload ({label} {args.prompts} prompts; stage 2 includes the noise-floor runs):")
    header = ("mode", "total s", "stage 1 s", "stage 2 s", "peak GiB", "floor max", "floor mean",
              "Spearman min", "Spearman mean", f"top-{TOP_K} min", "max |dc - f32|", "DLA err max")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    reference = results["float32"]["changes"]
    largest = max(np.abs(c).max() for c in reference.values())
    eligible = []
    for mode in modes:
        r = results[mode.name]
        s1, s2 = r["stage1"] * scale1, r["stage2"] * scale2
        rho_min, rho_mean, overlap, diff = agreement(r["changes"], reference)
        print(f"| {mode.name} | {s1 + s2:.1f} | {s1:.1f} | {s2:.1f} | {r['peak_gib']:.1f} | "
              f"{max(r['floors']):.2g} | {np.mean(r['floors']):.2g} | {rho_min:.4f} | {rho_mean:.4f} | "
              f"{overlap}/{TOP_K} | {diff:.2g} | {r['dla_error']:.2g} |")
        if rho_min >= MIN_SPEARMAN and overlap == TOP_K:
            eligible.append((s1 + s2, mode.name))
    print(f"largest |delta_change| in float32: {largest:.3g}")
    if eligible:
        print(f"fastest mode with Spearman >= {MIN_SPEARMAN} and top-{TOP_K} {TOP_K}/{TOP_K} vs float32: "
              f"{min(eligible)[1]}")


if __name__ == "__main__":
    main()
