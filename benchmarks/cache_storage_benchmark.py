"""Activation-cache storage: size, write and read time, and the DLA error of each storage dtype
x compression (interp_lib.cache.CacheStorage, config analysis.cache_dtype and
analysis.cache_compression), measured in one run on one machine.

    python benchmarks/cache_storage_benchmark.py               # 2b widths, 4 layers, 4 prompts of 210 tokens
    python benchmarks/cache_storage_benchmark.py --profile     # where stage 1's time goes, per prompt
    python benchmarks/cache_storage_benchmark.py --layers 2 --vocab 4096 --seq-len 64 --prompts 2   # smoke test

Model: a random-weight Gemma-2 with Gemma-2-2b's widths (d_model 2304, 8 heads of 256, MLP
9216; benchmarks/gpu_workload.py), fewer layers and a smaller vocabulary so that it runs on a
CPU in about a minute; the cache's arrays grow linearly in layers, so sizes and times scale by
26 / --layers for Gemma-2-2b. Its activations are float mantissa noise as real ones are, so
compression ratios carry over roughly; real residual streams are larger in magnitude, which
float16's relative rounding (2^-11) scales with.

The table: per storage, the file's size, the time to write the prompts (collected beforehand)
and to read every array of every prompt back (float32), the largest |DLA reconstruction error|
(sum of the components minus the model's own pre-softcap delta, interp_lib.analyses.dla) and the largest
|difference| of a DLA component and of a logit-lens entry from float32 storage's.

--profile instead times stage 1 of benchmarks/gpu_workload.py per model-prompt (forward pass
with hooks, the NaN/Inf check, the arrays of collect_variant, logit lens, DLA) and the HDF5
write of that prompt, beside a forward pass without hooks.
Needs torch, transformers, numpy and h5py (imported by interp_lib), nothing else.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_workload import gemma2_2b_config  # noqa: E402
from interp_lib.cache import collect as cache_collect  # noqa: E402
from interp_lib.cache import (COMPRESSIONS, STORAGE_DTYPES, CacheFile, CacheStorage, CacheWriter,  # noqa: E402
                              collect_variant, file_attrs, unembed_arrays, write_cache)
from interp_lib.analyses.dla import dla_from_arrays, results_from_cache  # noqa: E402
from interp_lib.model.hooked import HookedModel  # noqa: E402
from interp_lib.analyses.logit_lens import ActionReadout, trajectories_from_cache, trajectory_from_arrays  # noqa: E402

from common import best_of as common_best_of  # noqa: E402
from common import machine_line, print_table  # noqa: E402

TOKENS = {"C": 5, "D": 7, "prefix": [3]}


def build_model(layers: int, vocab: int, seq_len: int, device: str) -> HookedModel:
    from transformers import Gemma2ForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = Gemma2ForCausalLM(gemma2_2b_config(layers, vocab, sliding_window=max(1, seq_len // 2))).eval()
    return HookedModel(model, name="random-2b-width")


def prompts(n: int, seq_len: int, vocab: int, device: str) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, vocab, (1, seq_len), generator=gen).to(device) for _ in range(n)]


def collect(model, ids_list) -> dict[int, dict]:
    variants = {}
    for v, ids in enumerate(ids_list, start=1):
        data = collect_variant(model, ids, TOKENS)
        data["attrs"]["prompt"] = f"prompt {v}"
        variants[v] = data
    return variants


def header(model) -> tuple[dict, dict]:
    return file_attrs(model, model.name, "benchmark", "fp", "th", TOKENS), unembed_arrays(model, TOKENS)


def best_of(fn, repeats: int, device: str):
    return common_best_of(fn, repeats, device, warm_up=True)


def read_everything(path) -> None:
    with CacheFile(path) as cache:
        for v in cache.variants:
            view = cache[v]
            for key in cache.group(v).keys():  # noqa: SIM118 (a CheckedGroup is not iterable)
                view[key]


def storage_table(model, ids_list, repeats: int, device: str) -> list[dict]:
    variants = collect(model, ids_list)
    attrs, unembed = header(model)
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for dtype, compression in itertools.product(STORAGE_DTYPES, COMPRESSIONS):
            storage = CacheStorage(dtype, compression)
            path = Path(tmp) / f"{dtype}-{compression}.h5"
            _, t_write = best_of(lambda p=path, s=storage: write_cache(p, attrs, unembed, variants, s), repeats, "cpu")
            _, t_read = best_of(lambda p=path: read_everything(p), repeats, "cpu")
            with CacheFile(path) as cache:
                dla = results_from_cache(cache)
                lens = np.array([rec["trajectory"] for rec in trajectories_from_cache(cache)])
            components = np.array([[c[-1] for c in r.components()] for r in dla])
            if reference is None:  # float32, none: the numbers as computed
                reference = components, lens
            rows.append({"dtype": dtype, "compression": compression, "MB": path.stat().st_size / 1e6,
                         "write_s": t_write, "read_s": t_read,
                         "recon": max(abs(r.reconstruction_error) for r in dla),
                         "dla_diff": float(np.abs(components - reference[0]).max()),
                         "lens_diff": float(np.abs(lens - reference[1]).max())})
    return rows


def print_storage_table(rows) -> str:
    columns = {"storage dtype": "dtype", "compression": "compression", "file MB": "MB", "write s": "write_s",
               "read s": "read_s", "max abs DLA reconstruction error": "recon",
               "max abs DLA component diff vs float32": "dla_diff", "max abs logit-lens diff vs float32": "lens_diff"}
    return print_table(list(columns), [{name: r[key] for name, key in columns.items()} for r in rows],
                       {"file MB": ".1f", "write s": ".3f", "read s": ".3f", "max abs DLA reconstruction error": ".1e",
                        "max abs DLA component diff vs float32": ".1e", "max abs logit-lens diff vs float32": ".1e"})


def profile(model, ids_list, repeats: int, device: str, storage: CacheStorage) -> list[tuple[str, float]]:
    """(step, seconds per prompt) of stage 1 (the best of `repeats` over all prompts)."""
    readout = ActionReadout.from_model(model, TOKENS)
    per_prompt = lambda fn: best_of(lambda: [fn(ids) for ids in ids_list], repeats, device)[1] / len(ids_list)  # noqa: E731
    t_plain = per_prompt(lambda ids: model.run_with_hooks(ids, last_only=True))
    t_forward = per_prompt(lambda ids: model.run_with_cache(ids, last_only=True, patterns=True))
    caches = {id(ids): model.run_with_cache(ids, last_only=True, patterns=True) for ids in ids_list}
    t_check = best_of(lambda: [cache_collect._check_all_finite({**c, "logits": lg[0]}, "m", "p")
                               for lg, c in caches.values()], repeats, device)[1] / len(ids_list)
    # collect_variant's own work: its forward pass replaced by the one already made
    model.run_with_cache = lambda ids, **kw: caches[id(ids)]
    try:
        t_collect = t_forward + per_prompt(lambda ids: collect_variant(model, ids, TOKENS))
    finally:
        del model.run_with_cache
    caches.clear()
    variants = collect(model, ids_list)
    t_lens = best_of(lambda: [trajectory_from_arrays(d["arrays"], d["attrs"], readout) for d in variants.values()],
                     repeats, "cpu")[1] / len(ids_list)
    t_dla = best_of(lambda: [dla_from_arrays(d["arrays"], d["attrs"], readout) for d in variants.values()],
                    repeats, "cpu")[1] / len(ids_list)
    attrs, unembed = header(model)
    with tempfile.TemporaryDirectory() as tmp:
        def write():
            with CacheWriter(Path(tmp) / "p.h5", attrs, unembed, storage) as writer:
                for v, d in variants.items():
                    writer.add(v, d)
        t_write = best_of(write, repeats, "cpu")[1] / len(ids_list)
    return [("forward pass without hooks (reference)", t_plain),
            ("forward pass with hooks (run_with_cache)", t_forward),
            ("NaN/Inf check", t_check),
            ("arrays (stack, copy to CPU, head outputs)", t_collect - t_forward - t_check),
            ("logit lens", t_lens), ("DLA", t_dla),
            (f"HDF5 write ({storage.dtype}, {storage.compression})", t_write),
            ("stage 1 + write (all but the reference)", t_collect + t_lens + t_dla + t_write)]


@torch.no_grad()  # a scoped switch: callers (tests) keep their grad mode
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000, help="vocabulary size (Gemma-2: 256000)")
    ap.add_argument("--seq-len", type=int, default=210, help="prompt length in tokens (the real prompts: ~200)")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="each measurement is repeated; the shortest counts")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--profile", action="store_true", help="time stage 1's steps instead")
    ap.add_argument("--dtype", default="float32", choices=list(STORAGE_DTYPES), help="storage for --profile")
    ap.add_argument("--compression", default="none", choices=list(COMPRESSIONS), help="storage for --profile")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.layers, args.vocab, args.seq_len, args.device)
    ids_list = prompts(args.prompts, args.seq_len, args.vocab, args.device)
    print(machine_line(args.device))
    print(f"random Gemma-2, 2b widths, {args.layers} layers, vocab {args.vocab}, {args.seq_len} tokens, "
          f"{args.prompts} prompts, best of {args.repeats}")
    if args.profile:
        rows = profile(model, ids_list, args.repeats, args.device, CacheStorage(args.dtype, args.compression))
        total = rows[-1][1]
        print("| step | ms per prompt | share of stage 1 + write |")
        print("|---|---|---|")
        for name, seconds in rows:
            print(f"| {name} | {seconds * 1e3:.1f} | {seconds / total:.0%} |")
        return rows
    rows = storage_table(model, ids_list, args.repeats, args.device)
    print_storage_table(rows)
    return rows


if __name__ == "__main__":
    main()
