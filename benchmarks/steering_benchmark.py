"""Steering speed on a random-weight Gemma-2-2b-shaped model: one prompt, every layer x alpha
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

Prints seconds per prompt, the ratios, and the largest |difference| from the naive deltas.
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

from gpu_workload import build_models, sync  # noqa: E402
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=26)
    ap.add_argument("--vocab", type=int, default=256000)
    ap.add_argument("--seq-len", type=int, default=210)
    ap.add_argument("--positions", choices=["all", "decision"], default="all")
    ap.add_argument("--naive-sample", type=int, default=4, help="layers whose rows the naive loop times")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="float32")
    args = ap.parse_args(argv)
    dev = args.device
    model = build_models(args.layers, dev, args.precision, args.vocab,
                         sliding_window=min(4096, args.seq_len // 2))[1]
    torch.manual_seed(0)
    ids = torch.randint(0, args.vocab, (1, args.seq_len), device=dev)
    rows = [5, 7]
    with torch.no_grad():
        prompt = PromptActivations.from_run(model, ids, {"C": rows[0], "D": rows[1]})
        scale = prompt.resid_pre.float().norm(dim=-1).mean(-1)  # [L]
        vectors = torch.randn(2, args.layers, model.cfg.d_model, device=dev)
        vectors = (vectors / vectors.norm(dim=-1, keepdim=True) * 0.5 * scale[None, :, None]).to(prompt.resid_pre.dtype)
    layers = list(range(args.layers))
    n_rows = 2 * len(layers) * len(ALPHAS)
    steered_deltas(model, prompt, rows, vectors, layers[-1:], ALPHAS, "resid_pre", args.positions)  # warm-up
    t_layer, per_layer = timed(dev, lambda: steered_deltas(model, prompt, rows, vectors, layers, ALPHAS, "resid_pre",
                                                           args.positions, max_rows=2 * len(ALPHAS)))
    peak = None
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t_one, one_pass = timed(dev, lambda: steered_deltas(model, prompt, rows, vectors, layers, ALPHAS, "resid_pre",
                                                        args.positions, max_rows=n_rows))
    if dev.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2 ** 30
    sample = np.linspace(0, args.layers - 1, min(args.naive_sample, args.layers)).round().astype(int).tolist()
    t_naive, ref = timed(dev, lambda: naive(model, ids, rows, vectors, sample, ALPHAS, args.positions))
    t_naive *= len(layers) / len(sample)
    err = max(np.abs(per_layer[:, sample] - ref).max(), np.abs(one_pass[:, sample] - ref).max())
    print(f"device {dev}, precision {args.precision}, {args.layers} layers, {args.seq_len} tokens, positions "
          f"{args.positions}: {n_rows} rows ({len(ALPHAS)} alphas x {args.layers} layers x direction + control)")
    print(f"naive (scaled from {len(sample)} layers): {t_naive:.2f} s/prompt")
    print(f"per layer:  {t_layer:.2f} s/prompt  ({t_naive / t_layer:.1f}x naive)")
    print(f"one pass:   {t_one:.2f} s/prompt  ({t_naive / t_one:.1f}x naive, {t_layer / t_one:.2f}x per layer)"
          + (f", peak {peak:.1f} GiB" if peak is not None else ""))
    print(f"max |difference| from naive: {err:.2e}")


if __name__ == "__main__":
    main()
