"""Exact patching: our batched, truncated runner against the naive reference (one full
forward pass with one hook per component), measured in one run on one machine.

    python benchmarks/patching_benchmark.py [--results results] [--quick]

Models: the embedded family's PT2_COREDe -> PT3_COREDe (merged weights from
`{results}/models/`, built by the workflow), and a random-weight Gemma-2 with
Gemma-2-2b's widths and 8 layers (source = target with perturbed linear layers). Prints
the machine and one table (benchmarks/common.py): time per prompt (all components) for
each method, their ratio, ours' share of the matmul peak measured in the same run (FLOPs
counted from the widths: each patch a forward pass from its layer to the end), the max
|delta difference|, the FLOP-bound ratio (all positions: 2n/(n+1) for n layers, every
layer from the patched one recomputed in full; and 2n/(n-1), the same with the last block
computed at the decision position only, as ours does), and peak memory.
"""

from __future__ import annotations

import argparse
import copy
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Widths, best_of, machine_line, patching_flops, peak_matmul_flops, print_table  # noqa: E402

from interp_lib.model.hooked import HookedModel  # noqa: E402
from interp_lib.patching import PatchRunner, PromptActivations, all_components  # noqa: E402
from interp_lib.reference import naive_patched_delta  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpu_peak_mb(device) -> float | None:
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def bench_model(label, target, source_acts, target_acts, W_O, tokens, ids, naive_subset=None, repeats=3,
                peak_flops=None):
    """Table rows (all positions, decision position) for one model; `peak_flops`: the
    device's measured matmul peak in the model's dtype (FLOP/s), for "share of peak"."""
    rows = []
    widths, T = Widths.of(target), ids.shape[-1]
    comps = all_components(target.n_layers, target.n_heads)
    naive_comps = comps if naive_subset is None else naive_subset(comps)
    device = target.device
    for positions in ("all", "decision"):
        runner = PatchRunner(target, W_O, tokens, positions, "result")
        target_acts._kv.clear()
        runner.deltas(source_acts, target_acts, [(c,) for c in comps[:2]])  # warm-up
        if str(device).startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)

        def ours():
            target_acts._kv.clear()  # the clean keys and values are part of the work
            return runner.deltas(source_acts, target_acts, [(c,) for c in comps])

        fast, t_fast = best_of(ours, repeats, device, budget_s=10.0)
        mem_fast = gpu_peak_mb(device) or peak_rss_mb()
        naive_patched_delta(target, ids, source_acts, W_O, comps[0], positions, "result", tokens)  # warm-up

        def reference():
            return {c: naive_patched_delta(target, ids, source_acts, W_O, c, positions, "result", tokens)
                    for c in naive_comps}

        naive, t_naive = best_of(reference, repeats, device, budget_s=10.0)
        t_naive = t_naive / len(naive_comps) * len(comps)
        mem_naive = gpu_peak_mb(device) or peak_rss_mb()
        index = {c: i for i, c in enumerate(comps)}
        diff = max(abs(fast[index[c]] - d) for c, d in naive.items())
        n = target.n_layers
        bound = 2 * n / (n + 1) if positions == "all" else float("nan")
        pruned_bound = 2 * n / (n - 1) if positions == "all" and n > 1 else float("nan")
        ratio = t_naive / t_fast
        flops = patching_flops(widths, T, positions)
        rows.append({
            "case": f"{label}, {positions}", "model": label, "positions": positions, "components": len(comps),
            "naive_checked": len(naive_comps), "t_naive_s": t_naive, "t_ours_s": t_fast, "ratio": ratio,
            "ours_tflop_s": flops / t_fast / 1e12,
            "share_of_peak": flops / t_fast / peak_flops if peak_flops else float("nan"),
            "flop_bound": bound, "of_bound": ratio / bound if positions == "all" else float("nan"),
            "bound_pruned_last": pruned_bound,
            "max_abs_diff": diff, "peak_mem_mb": max(mem_fast, mem_naive),
        })
    return rows


def embedded_case(results: Path, device):
    from interp_lib.model.loading import load_base_model, load_tokenizer
    from interp_lib.prompts import build_dataset
    from interp_lib.tokens import get_action_token_ids

    src_dir, tgt_dir = results / "models/PT2_COREDe", results / "models/PT3_COREDe"
    if not (tgt_dir / "model.safetensors").exists():
        sys.exit(f"{tgt_dir} not found: run the workflow first (snakemake --cores 1)")
    source = HookedModel(load_base_model(str(src_dir), "float32", device), load_tokenizer(str(src_dir)))
    target = HookedModel(load_base_model(str(tgt_dir), "float32", device), load_tokenizer(str(tgt_dir)))
    tokens = get_action_token_ids(target.tokenizer)
    ids = target.to_tokens(build_dataset()[1]["prompt"])
    return target, source, tokens, ids


def wide_case(device, n_layers=8, seq_len=160, dtype=torch.float32):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=n_layers,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=4096,
                       query_pre_attn_scalar=256, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                       attn_implementation="eager")
    torch.manual_seed(0)
    with torch.device(device):
        target_hf = Gemma2ForCausalLM(cfg).to(dtype).eval()
    source_hf = copy.deepcopy(target_hf)
    with torch.no_grad():
        for name, p in source_hf.named_parameters():
            if "proj" in name:  # as a merged LoRA adapter: linear layers only
                p.add_(0.002 * torch.randn_like(p))
    ids = torch.randint(10, 256000, (1, seq_len), device=device)
    return HookedModel(target_hf), HookedModel(source_hf), {"C": 235274, "D": 235284}, ids


def run_case(label, target, source, tokens, ids, naive_subset=None, repeats=3, peak_flops=None):
    src = PromptActivations.from_run(source, ids, tokens)
    tgt = PromptActivations.from_run(target, ids, tokens)
    W_O = torch.stack([source.W_O(layer) for layer in range(source.n_layers)])
    return bench_model(label, target, src, tgt, W_O, tokens, ids, naive_subset, repeats, peak_flops)


# (table header, row key): the shared columns first (benchmarks/common.py), then this benchmark's
COLUMNS = [("case", "case"), ("ours s", "t_ours_s"), ("naive s", "t_naive_s"), ("ratio", "ratio"),
           ("share of peak", "share_of_peak"), ("max abs diff", "max_abs_diff"), ("components", "components"),
           ("naive checked", "naive_checked"), ("ours TFLOP/s", "ours_tflop_s"), ("FLOP bound 2n/(n+1)", "flop_bound"),
           ("of bound", "of_bound"), ("bound, pruned last block 2n/(n-1)", "bound_pruned_last"),
           ("peak memory MB", "peak_mem_mb")]


def print_rows(rows) -> str:
    """The one table of a run (times per prompt, all components)."""
    table = [{header: r[key] for header, key in COLUMNS} for r in rows]
    return print_table([header for header, _ in COLUMNS], table,
                       {"share of peak": ".2%", "of bound": ".0%", "max abs diff": ".2g"})


@torch.no_grad()  # a scoped switch: callers (tests) keep their grad mode
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results", type=Path)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="wide model: naive path on 2 components per layer")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 keeps timings stable on a shared 2-core machine)")
    ap.add_argument("--repeats", type=int, default=3, help="each method is timed this often; the shortest counts")
    ap.add_argument("--skip-embedded", action="store_true")
    ap.add_argument("--skip-wide", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine_line(args.device))
    peak = peak_matmul_flops(args.device, torch.float32)  # every case here runs in float32
    print(f"measured float32 matmul peak: {peak / 1e12:.3g} TFLOP/s", flush=True)
    rows = []
    if not args.skip_embedded:
        rows += run_case("embedded PT2->PT3De", *embedded_case(args.results, args.device), repeats=args.repeats,
                         peak_flops=peak)
        for r in rows:
            print(f"  {r['case']}: ours {r['t_ours_s']:.3g} s, naive {r['t_naive_s']:.3g} s", flush=True)
    if not args.skip_wide:
        subset = (lambda comps: [c for c in comps if c.head in (0, None)]) if args.quick else None
        rows += run_case("2b-width, 8 layers", *wide_case(args.device), naive_subset=subset, repeats=args.repeats,
                         peak_flops=peak)
    print_rows(rows)
    print("seconds per prompt, all components; ratio: naive s / ours s; share of peak: ours' counted matmul FLOPs "
          "per second over the measured float32 peak; naive checked: components the naive loop ran (its time "
          "scaled to all)")
    return rows


if __name__ == "__main__":
    main()
