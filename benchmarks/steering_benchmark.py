"""Steering speed on a random-weight Gemma-2-shaped model (2b unless --size): one prompt, every layer x alpha
x (direction + control), three ways, timed in one run:

  naive      one full forward pass from the tokens per row, with one hook adding the vector
             (timed on a sample of rows and scaled to all of them);
  per layer  interp_lib's runner, one layer's rows per pass, each pass from that layer's
             cached resid_pre (the CPU default);
  one pass   the runner with every row in one pass from the lowest layer (the GPU default
             where memory allows).

    python benchmarks/steering_benchmark.py                          # 26 layers, 210 tokens, all positions
    python benchmarks/steering_benchmark.py --positions decision
    python benchmarks/steering_benchmark.py --device cpu --layers 4 --vocab 4096 --seq-len 64   # smoke test

Prints the machine and one table (benchmarks/common.py): seconds per prompt, the ratio to
the naive loop, the share of the matmul peak measured in the same run (FLOPs counted from
the widths), and the largest |difference| from the naive deltas.
Needs torch, transformers, numpy, h5py and pandas (imported by interp_lib), nothing else.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Widths, forward_flops, machine_line, peak_matmul_flops, print_table, sync  # noqa: E402
from gpu_workload import SIZES, build_model, gemma2_config  # noqa: E402
from interp_lib.patching import PromptActivations  # noqa: E402
from interp_lib.steering import steered_deltas  # noqa: E402

ALPHAS = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]


def naive(model, ids, rows, vectors, layers, alphas, positions) -> np.ndarray:
    out = np.full((vectors.shape[0], len(layers), len(alphas)), np.nan)
    for k in range(vectors.shape[0]):
        for i, layer in enumerate(layers):
            for j, alpha in enumerate(alphas):
                def add(value, name, v=alpha * vectors[k, layer]):
                    value = value.clone()
                    if positions == "all":
                        value += v
                    else:
                        value[:, -1] += v
                    return value
                logits = model.run_with_hooks(ids, [(f"blocks.{layer}.hook_resid_pre", add)], rows=rows,
                                              last_only=True)
                out[k, i, j] = float(logits[0, 1] - logits[0, 0])
    return out


def timed(device, fn):
    sync(device)
    t0 = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - t0, result


def steering_flops(w: Widths, T: int, layers, rows_per_layer: int, positions: str, one_pass: bool) -> float:
    """Matmul FLOPs of steering one prompt: per layer, `rows_per_layer` rows from that layer
    on (the last block pruned unless it is steered in the same pass), or (`one_pass`) every
    row from the lowest layer, the last block unpruned."""
    if one_pass:
        return rows_per_layer * len(layers) * forward_flops(w, T, min(layers), positions, prune_last_block=False)
    return sum(rows_per_layer * forward_flops(w, T, layer, positions, prune_last_block=layer != w.n_layers - 1)
               for layer in layers)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="2b", help="Gemma-2 shapes (default 2b)")
    ap.add_argument("--layers", type=int, default=None, help="layers (default: the size's)")
    ap.add_argument("--vocab", type=int, default=256000)
    ap.add_argument("--seq-len", type=int, default=210)
    ap.add_argument("--positions", choices=["all", "decision"], default="all")
    ap.add_argument("--naive-sample", type=int, default=4, help="layers whose rows the naive loop times")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="float32")
    args = ap.parse_args(argv)
    dev = args.device
    config = gemma2_config(args.size, args.layers, args.vocab, sliding_window=min(4096, args.seq_len // 2))
    n_layers = config.num_hidden_layers
    model = build_model(1, config, dev, args.precision)
    widths = Widths.of(model)
    print(machine_line(dev))
    peak = peak_matmul_flops(dev, model.dtype)
    torch.manual_seed(0)
    ids = torch.randint(0, args.vocab, (1, args.seq_len), device=dev)
    rows = [5, 7]
    with torch.no_grad():
        prompt = PromptActivations.from_run(model, ids, {"C": rows[0], "D": rows[1]})
        scale = prompt.resid_pre.float().norm(dim=-1).mean(-1)  # [L]
        vectors = torch.randn(2, n_layers, model.cfg.d_model, device=dev)
        vectors = (vectors / vectors.norm(dim=-1, keepdim=True) * 0.5 * scale[None, :, None]).to(prompt.resid_pre.dtype)
    layers = list(range(n_layers))
    per_layer_rows = 2 * len(ALPHAS)
    n_rows = per_layer_rows * len(layers)
    steered_deltas(model, prompt, rows, vectors, layers[-1:], ALPHAS, "resid_pre", args.positions)  # warm-up
    t_layer, per_layer = timed(dev, lambda: steered_deltas(model, prompt, rows, vectors, layers, ALPHAS, "resid_pre",
                                                           args.positions, max_rows=per_layer_rows))
    peak_gib = None
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(dev)
    t_one, one_pass = timed(dev, lambda: steered_deltas(model, prompt, rows, vectors, layers, ALPHAS, "resid_pre",
                                                        args.positions, max_rows=n_rows))
    if dev.startswith("cuda"):
        peak_gib = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    sample = np.linspace(0, n_layers - 1, min(args.naive_sample, n_layers)).round().astype(int).tolist()
    t_naive, ref = timed(dev, lambda: naive(model, ids, rows, vectors, sample, ALPHAS, args.positions))
    t_naive *= len(layers) / len(sample)
    print(f"Gemma-2-{args.size} shapes, precision {args.precision}, {n_layers} layers, {args.seq_len} tokens, "
          f"positions {args.positions}: {n_rows} rows ({len(ALPHAS)} alphas x {n_layers} layers x direction + "
          f"control); naive timed on {len(sample)} layers and scaled; measured matmul peak {peak / 1e12:.3g} TFLOP/s")
    table = []
    for case, seconds, deltas, one in (("per layer", t_layer, per_layer, False), ("one pass", t_one, one_pass, True)):
        flops = steering_flops(widths, args.seq_len, layers, per_layer_rows, args.positions, one)
        diff = float(np.abs(deltas[:, sample] - ref).max())
        table.append({"case": case, "ours s": seconds, "naive s": t_naive, "ratio": t_naive / seconds,
                      "share of peak": flops / seconds / peak, "max abs diff": diff,
                      "rows per pass": per_layer_rows if not one else n_rows, "TFLOP/s": flops / seconds / 1e12,
                      "peak GiB": peak_gib if one else None})
    print_table(["case", "ours s", "naive s", "ratio", "share of peak", "max abs diff", "rows per pass", "TFLOP/s",
                 "peak GiB"], table, {"share of peak": ".2%", "max abs diff": ".2e", "ratio": ".2f"})
    print("seconds per prompt; ratio: naive s / ours s; share of peak: counted matmul FLOPs per second over the "
          "measured peak in the model's dtype; peak GiB: GPU memory of the one-pass run")
    return table


if __name__ == "__main__":
    main()
