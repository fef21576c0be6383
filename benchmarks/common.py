"""What every benchmark here prints: one line stating the machine, one markdown table, and
the pieces behind its columns (a measured matmul peak, FLOP counts from a model's widths).

Columns the benchmarks share (each adds its own after them):
  case           what was timed;
  ours s         interp_lib's time (per prompt, or for the whole workload);
  naive s        the naive reference's time, where one exists ("-" otherwise);
  ratio          naive s / ours s;
  share of peak  ours' matmul FLOPs (counted from the widths, `forward_flops`) per second,
                 over the peak matmul throughput measured in the same run (`peak_matmul_flops`);
  max abs diff   the largest |difference| of ours' numbers from the reference's.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from dataclasses import dataclass
from typing import Sequence

import torch


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def best_of(fn, repeats: int, device, budget_s: float = float("inf"), warm_up: bool = False):
    """(result, the shortest of up to `repeats` timed calls of `fn` in seconds). `warm_up`:
    one untimed call first; repeating stops once `budget_s` is spent (slow cases are stable
    enough with fewer)."""
    if warm_up:
        fn()
    times = []
    while len(times) < repeats and (not times or sum(times) < budget_s):
        sync(device)
        t0 = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return result, min(times)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(device) -> str:
    """One line naming the machine a table was measured on: accelerator (or CPU model),
    cores, torch threads, torch version and date."""
    device = str(device)
    cpu = f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        where = f"{props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}); host {cpu}"
    else:
        where = cpu
    return f"machine: device {device}: {where}; torch {torch.__version__}; {datetime.date.today().isoformat()}"


def peak_matmul_flops(device, dtype: torch.dtype, n: int | None = None, budget_s: float = 1.0) -> float:
    """Measured peak matmul throughput (FLOP/s) of `device` in `dtype`: the best of repeated
    [n, n] @ [n, n] products (n = 8192 on a GPU; on a CPU the size, from 256 up to 2048,
    where one product first takes 0.1 s: a CPU without bfloat16 units runs bfloat16 at ~1
    GFLOP/s, where 2048 would take 17 s a product). Run it inside the same matmul settings as
    the workload (e.g. a precision mode's `matmuls()`, for TF32)."""
    on_gpu = str(device).startswith("cuda")
    gen = torch.Generator(device=device).manual_seed(0)

    def operands(size):
        a = torch.randn(size, size, device=device, generator=gen).to(dtype)
        return a, torch.randn(size, size, device=device, generator=gen).to(dtype)

    if n is None and not on_gpu:
        n = 256
        while n < 2048:
            a, b = operands(n)
            a @ b  # warm-up
            t0 = time.perf_counter()
            a @ b
            if time.perf_counter() - t0 >= 0.1:
                break
            n *= 2
    n = n or 8192
    a, b = operands(n)
    a @ b  # warm-up: kernel selection, first-touch allocation
    best, spent = float("inf"), 0.0
    while spent < budget_s or best == float("inf"):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        took = time.perf_counter() - t0
        best, spent = min(best, took), spent + took
        if spent > 10 * budget_s:
            break
    return 2.0 * n ** 3 / best


@dataclass(frozen=True)
class Widths:
    """A decoder's widths, as far as matmul FLOPs go."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int

    @classmethod
    def of(cls, hooked) -> "Widths":
        """From an interp_lib HookedModel."""
        cfg = hooked.cfg
        return cls(cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head,
                   hooked.model.config.intermediate_size, cfg.d_vocab)

    @classmethod
    def of_config(cls, config) -> "Widths":
        """From a Hugging Face config (Gemma-2 / Llama style)."""
        return cls(config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                   config.num_key_value_heads, config.head_dim, config.intermediate_size, config.vocab_size)


def block_flops(w: Widths, Tq: int, Tk: int) -> float:
    """Matmul FLOPs (2 per multiply-add) of one decoder block on Tq query positions
    attending to Tk keys (dense, as the eager kernels compute: the causal mask saves
    nothing): q, k, v, o projections, scores and their product with the values, and the
    gated MLP's three matrices. Keys and values are computed for the Tq positions only
    (the others', if any, come from a cache)."""
    projections = w.d_model * w.d_head * (2 * w.n_heads + 2 * w.n_kv_heads) + 3 * w.d_model * w.d_mlp
    return 2.0 * Tq * projections + 4.0 * Tq * Tk * w.n_heads * w.d_head


def kv_flops(w: Widths, T: int) -> float:
    """FLOPs of one block's keys and values at T positions."""
    return 2.0 * T * 2 * w.d_model * w.n_kv_heads * w.d_head


def forward_flops(w: Widths, T: int, start: int = 0, positions: str = "all", prune_last_block: bool = True,
                  vocab_rows: int = 2) -> float:
    """FLOPs of one sequence (one batch row) from resid_pre of block `start` through the
    unembedding of the last position (`vocab_rows` logits: 2 for delta, d_vocab for all).

    positions "all": every block at all T positions, but with `prune_last_block` the last
    block computes keys and values of the first T-1 positions and the rest at the last one
    only (nothing reads its other positions). "decision": one position per block against
    T cached keys (their cost: `kv_flops`, once per prompt, not counted here)."""
    total = 2.0 * w.d_model * vocab_rows
    for layer in range(start, w.n_layers):
        if positions == "decision":
            total += block_flops(w, 1, T)
        elif prune_last_block and layer == w.n_layers - 1 and T > 1:
            total += kv_flops(w, T - 1) + block_flops(w, 1, T)
        else:
            total += block_flops(w, T, T)
    return total


def patching_flops(w: Widths, T: int, positions: str = "all", sets_per_layer: int | None = None) -> float:
    """FLOPs of exact patching on one prompt, every set run from its patched layer to the
    end (NOTES section 8): `sets_per_layer` sets start at each layer (default: every head
    and the MLP, a full single-component sweep). "decision" adds the clean keys and values
    of every block, computed once."""
    per_layer = w.n_heads + 1 if sets_per_layer is None else sets_per_layer
    total = sum(per_layer * forward_flops(w, T, layer, positions) for layer in range(w.n_layers))
    if positions == "decision":
        total += w.n_layers * kv_flops(w, T - 1)
    return total


def fmt(value, digits: int = 3) -> str:
    """A table cell: floats to `digits` significant digits, None and NaN as "-"."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.{digits}g}"
    return str(value)


def print_table(columns: Sequence[str], rows: Sequence[dict], formats: dict | None = None) -> str:
    """Prints (and returns) one markdown table; a row's missing cells print as "-".
    `formats`: column -> format spec for that column's floats (default 3 significant digits)."""
    formats = formats or {}
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for col in columns:
            value = row.get(col)
            spec = formats.get(col)
            if spec and isinstance(value, float) and value == value:
                cells.append(format(value, spec))
            else:
                cells.append(fmt(value))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text
