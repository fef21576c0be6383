"""The original design's full workload on random-weight Gemma-2-shaped models (2b, 9b or 27b), per precision mode.

    python benchmarks/gpu_workload.py                    # 2b, every mode: 5 models x 15 prompts; 4 x 15 x 234 patches
    python benchmarks/gpu_workload.py --size 27b --modes bfloat16 --quick   # 27b shapes (float32 always runs too)
    python benchmarks/gpu_workload.py --quick            # 2 prompts per stage, extrapolated
    python benchmarks/gpu_workload.py --device cpu --layers 2 --vocab 4096 --seq-len 64 --quick   # CI smoke test

Five models (a base and four "fine-tuned" copies with rank-64 perturbations of every
linear layer, as merged LoRA adapters are) with the real shapes of Gemma-2-2b, 9b or 27b
(`SIZES`: layers, widths, heads, query_pre_attn_scalar; vocab 256000, both softcaps,
alternating sliding-window attention). Every weight is rounded to bfloat16 once, so all
modes (interp_lib/model/precision.py) run the same weights and differ only in how they compute.
Only one model is on the device at a time, so peak memory is about one model (27b in
float32: ~101 GiB) plus the work: each model is rebuilt from the same seeds when needed.
Per mode, timed separately (model builds apart):
  1. activations + logit lens + DLA: 5 models x N prompts, one model at a time (run_with_cache,
     the cache's arrays, the lens trajectory and the attribution from them); the patching
     sources' per-prompt activations and W_O are kept (on the CPU when the device is a GPU),
     as the workflow reads them from the cache;
  2. exact patching, all positions: 4 experiments x N prompts x all components (26 x 9 = 234
     for 2b), plus each prompt's noise floor (patching.noise_floor: the unpatched recompute
     and a self-patch per layer, as every workflow patching job runs them), one target
     model on the device at a time; PatchRunner's batch size is the library's default
     (memory-aware on a GPU) unless --batch-size is given.
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
import dataclasses
import gc
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Widths, forward_flops, machine_line, patching_flops, peak_matmul_flops, print_table, sync  # noqa: E402
from interp_lib.cache import collect_variant  # noqa: E402
from interp_lib.analyses.dla import dla_from_arrays  # noqa: E402
from interp_lib.model.hooked import HookedModel  # noqa: E402
from interp_lib.analyses.logit_lens import ActionReadout, trajectory_from_arrays  # noqa: E402
from interp_lib.patching import PatchRunner, PromptActivations, noise_floor, own_W_O, sweep  # noqa: E402
from interp_lib.model.precision import PRECISIONS, get_precision  # noqa: E402

EXPERIMENTS = [(1, 2), (1, 3), (2, 3), (3, 2)]  # PT2->PT3De, PT2->PT3Ut, PT3De->PT3Ut, PT3Ut->PT3De
N_MODELS = 5
DEFAULT_MODES = ("float32", "tf32", "bfloat16", "bfloat16-resid32")
MIN_SPEARMAN, TOP_K = 0.99, 10
LORA_RANK = 64

# The published configs (config.json of google/gemma-2-2b, -9b, -27b). query_pre_attn_scalar
# is head_dim for 2b and 9b (9b's was corrected from 224 to 256 in July 2024) and
# d_model / n_heads = 144 for 27b.
SIZES = {
    "2b": dict(num_hidden_layers=26, hidden_size=2304, intermediate_size=9216, num_attention_heads=8,
               num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256),
    "9b": dict(num_hidden_layers=42, hidden_size=3584, intermediate_size=14336, num_attention_heads=16,
               num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256),
    "27b": dict(num_hidden_layers=46, hidden_size=4608, intermediate_size=36864, num_attention_heads=32,
                num_key_value_heads=16, head_dim=128, query_pre_attn_scalar=144),
}
SHARED = dict(vocab_size=256000, sliding_window=4096, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
              max_position_embeddings=8192)


def gemma2_config(size: str = "2b", n_layers: int | None = None, vocab: int = 256000, sliding_window: int = 4096):
    """A Gemma2Config with `size`'s shapes; `n_layers`, `vocab` and `sliding_window` shrink it
    for smoke tests."""
    from transformers import Gemma2Config

    shape = dict(SIZES[size])
    if n_layers is not None:
        shape["num_hidden_layers"] = n_layers
    return Gemma2Config(**{**SHARED, **shape, "vocab_size": vocab, "sliding_window": sliding_window},
                        attn_implementation="eager")


def gemma2_2b_config(n_layers: int, vocab: int = 256000, sliding_window: int = 4096):
    return gemma2_config("2b", n_layers, vocab, sliding_window)


def _round_to_bfloat16(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())


def build_model(index: int, config, device: str, mode) -> HookedModel:
    """Model `index` of the five in `mode`: 0 is the base, 1-4 the base plus a merged rank-64
    update of every linear layer (seeded by `index`). Rebuilt from the seeds on every call,
    so the same index gives the same bfloat16-representable weights whatever the mode and
    however often it is built; built in float32 on `device`, then cast parameter by parameter."""
    from transformers import Gemma2ForCausalLM

    mode = get_precision(mode)
    torch.manual_seed(0)
    with torch.device(device):
        model = Gemma2ForCausalLM(config).eval()
    _round_to_bfloat16(model)
    if index > 0:
        gen = torch.Generator(device=device).manual_seed(index)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.ndim == 2 and "proj" in name:  # a merged rank-64 LoRA update
                    a = torch.randn(p.shape[0], LORA_RANK, device=device, generator=gen)
                    b = torch.randn(LORA_RANK, p.shape[1], device=device, generator=gen)
                    p.add_(0.02 / LORA_RANK ** 0.5 * a @ b * 0.02)
        _round_to_bfloat16(model)
    return HookedModel(model.to(mode.weights), name=f"model{index}", precision=mode)


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


def _release(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _take_peak_gib(device: str) -> float:
    """GiB allocated at most since the last call (the counter restarts)."""
    if not device.startswith("cuda"):
        return float("nan")
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return peak


def moved(acts: PromptActivations, device) -> PromptActivations:
    """`acts` with its tensors on `device` (and no cached keys and values)."""
    return dataclasses.replace(acts, input_ids=acts.input_ids.to(device), resid_pre=acts.resid_pre.to(device),
                               z=acts.z.to(device), mlp_out=acts.mlp_out.to(device), _kv={})


def workload_flops(w: Widths, T: int, n_prompts: int, experiments=EXPERIMENTS) -> tuple[float, float]:
    """(stage 1, stage 2) matmul FLOPs of the workload on `n_prompts` prompts of T tokens.
    Stage 1: a cached forward pass (full-vocabulary logits at the decision position) per
    model and prompt, and one more per patching source and prompt. Stage 2, per experiment
    and prompt: every component's patch from its layer on, the noise floor's self-patch per
    layer and recompute from layer 0, and the target's activations; the one unpatched
    control row per batch is left out."""
    cached_pass = forward_flops(w, T, 0, "all", prune_last_block=False, vocab_rows=w.d_vocab)
    n_sources = len({s for s, _ in experiments})
    stage1 = (N_MODELS + n_sources) * n_prompts * cached_pass
    per_prompt = (patching_flops(w, T, "all") + patching_flops(w, T, "all", sets_per_layer=1)
                  + forward_flops(w, T, 0, "all") + cached_pass)
    return stage1, len(experiments) * n_prompts * per_prompt


def run_mode(mode, args, config, prompts, tokens) -> dict:
    """Runs both stages in `mode`, one model on the device at a time; returns timings, peak
    memory, the measured matmul peak and every (experiment, prompt)'s delta_change array."""
    device = args.device
    on_gpu = device.startswith("cuda")
    # where the patching sources' activations and W_O wait for stage 2: off the GPU, so that
    # it holds one model at a time
    parking = "cpu" if on_gpu else device
    out = {"build": 0.0, "stage1": 0.0, "stage2": 0.0, "changes": {}, "floors": [], "dla_error": 0.0,
           "build_peak_gib": float("nan"), "work_peak_gib": float("nan")}
    _release(device)
    _take_peak_gib(device)

    def build(index: int) -> HookedModel:
        _release(device)
        t0 = time.perf_counter()
        model = build_model(index, config, device, mode)
        sync(device)
        out["build"] += time.perf_counter() - t0
        out["build_peak_gib"] = np.fmax(out["build_peak_gib"], _take_peak_gib(device))
        return model

    def timed(stage: str, t0: float) -> None:
        sync(device)
        out[stage] += time.perf_counter() - t0
        out["work_peak_gib"] = np.fmax(out["work_peak_gib"], _take_peak_gib(device))

    experiments = EXPERIMENTS[:args.experiments]
    sources = sorted({s for s, _ in experiments})
    source_W_O, source_acts = {}, {}
    emulate = args.emulate_tf32 and mode.tf32 and not on_gpu
    with mode.matmuls():
        out["peak_flops"] = peak_matmul_flops(device, mode.weights)
        _take_peak_gib(device)
        with EmulatedTF32() if emulate else contextlib.nullcontext():
            for index in range(N_MODELS):
                model = build(index)
                t0 = time.perf_counter()
                readout = ActionReadout.from_model(model, tokens)
                for ids in prompts:
                    data = collect_variant(model, ids, tokens)
                    trajectory_from_arrays(data["arrays"], data["attrs"], readout)
                    result = dla_from_arrays(data["arrays"], data["attrs"], readout)
                    out["dla_error"] = max(out["dla_error"], abs(result.reconstruction_error))
                if index in sources:
                    source_W_O[index] = own_W_O(model).to(parking)
                    source_acts[index] = [moved(PromptActivations.from_run(model, ids, tokens), parking)
                                          for ids in prompts]
                timed("stage1", t0)
                del model, readout

            for target_index in dict.fromkeys(t for _, t in experiments):
                target = build(target_index)
                t0 = time.perf_counter()
                target_W_O = own_W_O(target)
                for e, (src_i, tgt_i) in enumerate(experiments):
                    if tgt_i != target_index:
                        continue
                    runner = PatchRunner(target, source_W_O[src_i].to(device), tokens, "all", "result",
                                         batch_size=args.batch_size)
                    for p, ids in enumerate(prompts):
                        src = moved(source_acts[src_i][p], device)
                        tgt = PromptActivations.from_run(target, ids, tokens)
                        controls: list = []
                        out["changes"][e, p] = np.array([r.delta_change for r in sweep(runner, src, tgt, controls)])
                        out["floors"].append(noise_floor(runner, tgt, target_W_O, controls))
                    out["batch_size"] = runner.rows_per_pass(prompts[0].shape[-1])
                    if args.profile and "profile" not in out:
                        timed("stage2", t0)  # the profiled sweep is not part of the workload's time
                        out["profile"] = profile_sweep(runner, moved(source_acts[src_i][0], device),
                                                       PromptActivations.from_run(target, prompts[0], tokens), device)
                        t0 = time.perf_counter()
                    del runner, src, tgt
                timed("stage2", t0)
                del target, target_W_O
    _release(device)
    return out


def profile_sweep(runner, src: PromptActivations, tgt: PromptActivations, device: str, rows: int = 15) -> str:
    """The ops that take the most device time (self time; CPU time on a CPU) in one prompt's
    sweep, as torch.profiler's table."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    sweep(runner, src, tgt, [])  # warm-up: allocator, kernels chosen
    sync(device)
    with profile(activities=activities) as prof:
        sweep(runner, src, tgt, [])
        sync(device)
    key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


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
def main(argv=None) -> dict:
    """Runs the benchmark; returns {"rows": the table's rows, "table": its text, "results": per mode}."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="2b", help="Gemma-2 shapes to run (default 2b)")
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES),
                    help=f"comma-separated precision modes (of {', '.join(PRECISIONS)}); float32 always runs")
    ap.add_argument("--quick", action="store_true", help="2 prompts per stage, extrapolated to --prompts")
    ap.add_argument("--prompts", type=int, default=15)
    ap.add_argument("--layers", type=int, default=None, help="layers (default: the size's: 26, 42 or 46)")
    ap.add_argument("--vocab", type=int, default=256000, help="vocabulary size (Gemma-2: 256000)")
    ap.add_argument("--seq-len", type=int, default=210, help="prompt length in tokens (the real prompts: ~200)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="patches per forward pass (default: PatchRunner's: 64 on a CPU, from free memory on a GPU)")
    ap.add_argument("--experiments", type=int, default=len(EXPERIMENTS), choices=range(1, len(EXPERIMENTS) + 1),
                    help="run the first N of the 4 experiments; stage 2 is extrapolated to all 4")
    ap.add_argument("--no-reference", action="store_true",
                    help="do not add float32 as the reference (its columns print '-'); for 9b/27b, where float32 "
                         "all-position patching alone outlasts a short GPU slot")
    ap.add_argument("--profile", action="store_true",
                    help="after the table, profile one prompt's stage-2 sweep per mode (torch.profiler): the ops "
                         "that take the most device time, to see where stage 2 falls short of the peak")
    ap.add_argument("--emulate-tf32", action="store_true",
                    help="on a CPU, run tf32 with matmul inputs rounded to TF32 (numerics only)")
    args = ap.parse_args(argv)
    reference_mode = [] if args.no_reference else ["float32"]
    modes = [get_precision(m) for m in dict.fromkeys([*reference_mode, *args.modes.split(",")])]
    n_run = 2 if args.quick else args.prompts
    device = args.device
    config = gemma2_config(args.size, args.layers, args.vocab, sliding_window=min(4096, args.seq_len // 2))
    widths = Widths.of_config(config)
    print(machine_line(device))
    print(f"Gemma-2-{args.size} shapes: {widths.n_layers} layers, d_model {widths.d_model}, "
          f"{widths.n_heads} heads ({widths.n_kv_heads} key/value) of {widths.d_head}, MLP {widths.d_mlp}, "
          f"vocab {widths.d_vocab}; {args.seq_len} tokens, {n_run} of {args.prompts} prompts per stage; "
          f"modes {', '.join(m.name for m in modes)}"
          + ("; tf32 emulated (inputs rounded)" if args.emulate_tf32 and not device.startswith("cuda") else ""),
          flush=True)
    tokens = {"C": min(235274, args.vocab - 2), "D": min(235284, args.vocab - 1), "prefix": [1]}
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, args.vocab, (1, args.seq_len), generator=gen).to(device) for _ in range(n_run)]

    results = {}
    for mode in modes:
        r = results[mode.name] = run_mode(mode, args, config, prompts, tokens)
        print(f"  {mode.name}: builds {r['build']:.1f} s, stage 1 {r['stage1']:.1f} s, stage 2 {r['stage2']:.1f} s, "
              f"peak {r['build_peak_gib']:.1f} GiB building, {r['work_peak_gib']:.1f} GiB working", flush=True)
    scale = args.prompts / n_run  # both stages are linear in the prompts, stage 2 in the experiments
    scale2 = scale * len(EXPERIMENTS) / args.experiments
    experiments = EXPERIMENTS[:args.experiments]
    flops1, flops2 = workload_flops(widths, args.seq_len, n_run, experiments)
    reference = results["float32"]["changes"] if "float32" in results else None
    largest = max(np.abs(c).max() for c in reference.values()) if reference else float("nan")
    float32_total = ((results["float32"]["stage1"] * scale + results["float32"]["stage2"] * scale2)
                     if reference else float("nan"))
    rows, eligible = [], []
    for mode in modes:
        r = results[mode.name]
        s1, s2 = r["stage1"] * scale, r["stage2"] * scale2
        if reference:
            rho_min, rho_mean, overlap, diff = agreement(r["changes"], reference)
        else:
            rho_min = rho_mean = diff = float("nan")
            overlap = "-"
        emulated = mode.tf32 and args.emulate_tf32 and not device.startswith("cuda")
        achieved = (flops1 + flops2) / (r["stage1"] + r["stage2"])
        rows.append({
            "case": mode.name, "ours s": s1 + s2, "ratio": float32_total / (s1 + s2),
            "share of peak": float("nan") if emulated else achieved / r["peak_flops"],
            "floor max": max(r["floors"]), "floor mean": float(np.mean(r["floors"])),
            "Spearman min": rho_min, "Spearman mean": rho_mean,
            f"top-{TOP_K} min": f"{overlap}/{TOP_K}" if reference else "-",
            "max abs diff": diff, "DLA err max": r["dla_error"], "stage 1 s": s1, "stage 2 s": s2,
            "build s": r["build"], "peak GiB": float(np.fmax(r["build_peak_gib"], r["work_peak_gib"])),
            "work peak GiB": r["work_peak_gib"], "batch": r["batch_size"],
            "stage 2 TFLOP/s": flops2 / r["stage2"] / 1e12, "peak TFLOP/s": r["peak_flops"] / 1e12,
        })
        if reference and rho_min >= MIN_SPEARMAN and overlap == TOP_K:
            eligible.append((s1 + s2, mode.name))
    label = "extrapolated to" if n_run != args.prompts else "measured on"
    partial = args.experiments < len(EXPERIMENTS)
    print(f"\nfull workload, Gemma-2-{args.size} shapes ({label} {args.prompts} prompts"
          + (f", stage 2 from {args.experiments} of {len(EXPERIMENTS)} experiments" if partial else "")
          + f"; stage 2 includes the noise-floor runs; {flops1 * scale + flops2 * scale2:.3g} FLOP):")
    table = print_table(WORKLOAD_COLUMNS, rows, {"ours s": ".1f", "stage 1 s": ".1f", "stage 2 s": ".1f",
                                                 "build s": ".1f", "peak GiB": ".1f", "work peak GiB": ".1f",
                                                 "floor max": ".2g", "floor mean": ".2g", "Spearman min": ".4f",
                                                 "Spearman mean": ".4f", "max abs diff": ".2g", "DLA err max": ".2g",
                                                 "ratio": ".2f", "share of peak": ".1%"})
    print("ours s: stages 1 + 2 (model builds apart); naive s: none (the reference is float32's delta_change); "
          "ratio: float32's ours s / this mode's; share of peak: counted matmul FLOPs per second over the "
          "measured matmul peak in the mode's dtype; max abs diff: |delta_change - float32's|; "
          "peak GiB: GPU memory, builds included; work peak GiB: during the stages; batch: patches per pass")
    if reference:
        print(f"largest |delta_change| in float32: {largest:.3g}")
    for mode in modes:
        if "profile" in results[mode.name]:
            print(f"\nstage 2, one prompt's sweep in {mode.name}, by self device time:")
            print(results[mode.name]["profile"])
    if eligible:
        print(f"fastest mode with Spearman >= {MIN_SPEARMAN} and top-{TOP_K} {TOP_K}/{TOP_K} vs float32: "
              f"{min(eligible)[1]}")
    return {"rows": rows, "table": table, "results": results}


WORKLOAD_COLUMNS = ["case", "ours s", "naive s", "ratio", "share of peak", "floor max", "floor mean", "Spearman min",
                    "Spearman mean", f"top-{TOP_K} min", "max abs diff", "DLA err max", "stage 1 s", "stage 2 s",
                    "build s", "peak GiB", "work peak GiB", "batch", "stage 2 TFLOP/s", "peak TFLOP/s"]


if __name__ == "__main__":
    main()
