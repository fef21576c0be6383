"""The benchmarks' shared pieces (benchmarks/common.py), gpu_workload's --size shapes and
one-model-at-a-time structure, their one table per run, and PatchRunner's memory-aware
batch size (batching must not change a patch's result)."""

import math
import re
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from interp_lib.model.hooked import ArchSpec, HookedModel
from interp_lib.patching import Component, PatchRunner, PromptActivations, all_components, sweep
from interp_lib.patching.runner import CPU_BATCH_SIZE, gpu_batch_size, patch_row_bytes
from interp_lib.reference import naive_patched_delta
from test_hooked import tiny_gemma2
from test_patching import lora_like_pair

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common  # noqa: E402
import gpu_workload  # noqa: E402

SHARED_COLUMNS = ["case", "ours s", "naive s", "ratio", "share of peak", "max abs diff"]
TOKENS = {"C": 5, "D": 7}


def table_rows(text: str) -> tuple[list[str], list[list[str]]]:
    """(header, data rows) of the one markdown table in `text`; fails if there are more."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert sum(ln.startswith("|---") for ln in lines) == 1, text
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return cells[0], cells[2:]


# ---- FLOP counting ----------------------------------------------------------------------

def test_flop_counter_equals_a_hand_count():
    """2 layers, d_model 4, 2 heads (1 key/value head) of 2, MLP 8, 3 tokens."""
    w = common.Widths(n_layers=2, d_model=4, n_heads=2, n_kv_heads=1, d_head=2, d_mlp=8, d_vocab=10)
    # per position: q 4x4, k 4x2, v 4x2, o 4x4, MLP 3 x 4x8 = 16+8+8+16+96 = 144 multiply-adds
    # -> 288 FLOPs; scores and values: 2 x (2 heads x 2 dims) multiply-adds per key = 16 FLOPs
    full_block = 3 * 288 + 3 * 3 * 16  # 1008
    last_block_pruned = 2 * 2 * 16 + (288 + 3 * 16)  # k, v at 2 positions + one query: 64 + 336 = 400
    readout = 2 * 4 * 2  # two logits
    assert common.block_flops(w, 3, 3) == full_block == 1008
    assert common.forward_flops(w, 3, 0) == full_block + last_block_pruned + readout == 1424
    assert common.forward_flops(w, 3, 1) == last_block_pruned + readout == 416
    assert common.forward_flops(w, 3, 0, prune_last_block=False) == 2 * full_block + readout
    # a sweep: 3 sets (2 heads and the MLP) start at each layer
    assert common.patching_flops(w, 3) == 3 * 1424 + 3 * 416 == 5520
    decision_block = 288 + 3 * 16  # one query against 3 keys
    clean_kv = 2 * 64  # both layers' keys and values of the first 2 positions, once
    assert common.patching_flops(w, 3, "decision") == 3 * (2 * decision_block + 16) + 3 * (decision_block + 16) \
        + clean_kv == 3248


@pytest.mark.parametrize("start,prune", [(0, False), (0, True), (2, True)])
def test_flop_counter_equals_torch_count_of_a_real_pass(start, prune):
    """forward_flops against torch's own count of the matrix products of the hooked model's
    pass (dense attention: 12 tokens within a window of 64)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=8, sliding_window=64, query_pre_attn_scalar=8,
                       attn_implementation="eager")
    torch.manual_seed(0)
    model = HookedModel(Gemma2ForCausalLM(cfg).eval())
    T = 12
    resid = torch.randn(1, T, 32)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.forward_from(resid, start, rows=[5, 7], last_only=True, prune_last_block=prune)
    expected = common.forward_flops(common.Widths.of(model), T, start, "all", prune_last_block=prune)
    assert counter.get_total_flops() == expected


def test_peak_matmul_flops_is_a_throughput():
    peak = common.peak_matmul_flops("cpu", torch.float32, n=128, budget_s=0.05)
    assert 1e6 < peak < 1e15


def test_peak_matmul_flops_sizes_the_cpu_product_to_the_dtype(monkeypatch):
    """On a CPU the product grows from 256 until one takes 0.1 s: with a clock on which every
    product takes 0.2 s it stays at 256, and the throughput is 2 * 256^3 / 0.2."""
    clock = iter(range(0, 10_000))
    monkeypatch.setattr(common.time, "perf_counter", lambda: 0.2 * next(clock))
    assert common.peak_matmul_flops("cpu", torch.bfloat16, budget_s=0.3) == pytest.approx(2 * 256 ** 3 / 0.2)


def test_machine_line_names_cpu_torch_and_date():
    line = common.machine_line("cpu")
    assert common.cpu_model() in line and torch.__version__ in line
    assert re.search(r"\d{4}-\d\d-\d\d", line) and re.search(r"\d+ cores", line)


def test_print_table_is_one_markdown_table(capsys):
    text = common.print_table(["case", "ours s", "ratio"], [{"case": "a", "ours s": 1.23456, "ratio": float("nan")},
                                                           {"case": "b", "ours s": 2.0}], {"ours s": ".2f"})
    assert capsys.readouterr().out.strip() == text
    header, rows = table_rows(text)
    assert header == ["case", "ours s", "ratio"] and rows == [["a", "1.23", "-"], ["b", "2.00", "-"]]


# ---- gpu_workload --size -------------------------------------------------------------------

PUBLISHED = {  # config.json of google/gemma-2-2b, gemma-2-9b, gemma-2-27b
    "2b": dict(num_hidden_layers=26, hidden_size=2304, intermediate_size=9216, num_attention_heads=8,
               num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256),
    "9b": dict(num_hidden_layers=42, hidden_size=3584, intermediate_size=14336, num_attention_heads=16,
               num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256),
    "27b": dict(num_hidden_layers=46, hidden_size=4608, intermediate_size=36864, num_attention_heads=32,
                num_key_value_heads=16, head_dim=128, query_pre_attn_scalar=144),
}


@pytest.mark.parametrize("size", sorted(PUBLISHED))
def test_size_shapes_are_the_published_configs(size):
    config = gpu_workload.gemma2_config(size)
    for key, value in {**PUBLISHED[size], "vocab_size": 256000, "sliding_window": 4096,
                       "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}.items():
        assert getattr(config, key) == value, key
    spec = ArchSpec.from_config(config)
    assert spec.attn_scale == PUBLISHED[size]["query_pre_attn_scalar"] ** -0.5
    assert spec.sliding_windows[:2] == (4096, None)  # local, global, ...


def test_size_parameter_counts():
    """Parameters from the widths (tied embedding) match the models' names: 2.6B, 9.2B, 27.2B."""
    counts = {}
    for size in PUBLISHED:
        w = common.Widths.of_config(gpu_workload.gemma2_config(size))
        per_layer = w.d_model * w.d_head * (2 * w.n_heads + 2 * w.n_kv_heads) + 3 * w.d_model * w.d_mlp
        counts[size] = w.n_layers * per_layer + w.d_vocab * w.d_model
    assert [round(counts[s] / 1e9, 1) for s in ("2b", "9b", "27b")] == [2.6, 9.2, 27.2]


@pytest.mark.slow  # models at Gemma-2-2b widths, bfloat16 matmuls on a CPU: 15-20 s on 2 cores
def test_gpu_workload_runs_one_model_at_a_time_and_prints_one_table(monkeypatch, capsys):
    built, alive, most_alive = [], weakref.WeakSet(), [0]
    real_build = gpu_workload.build_model

    def counting_build(index, *args, **kwargs):
        most_alive[0] = max(most_alive[0], len(alive))  # gpu_workload collects garbage before a build
        model = real_build(index, *args, **kwargs)
        built.append(index)
        alive.add(model)
        return model

    monkeypatch.setattr(gpu_workload, "build_model", counting_build)
    out = gpu_workload.main(["--device", "cpu", "--size", "2b", "--layers", "1", "--vocab", "256", "--seq-len", "16",
                             "--quick", "--modes", "float32"])
    printed = capsys.readouterr().out
    assert printed.startswith("machine: device cpu")
    assert most_alive[0] == 0  # no model outlived its stage
    assert built == [0, 1, 2, 3, 4, 2, 3]  # stage 1: all five; stage 2: each target once
    header, rows = table_rows(printed)
    # the shared columns; max abs diff comes after the noise floor and rank columns, whose
    # places tests/test_precision.py reads
    assert header[:5] == SHARED_COLUMNS[:5] and header[10] == "max abs diff"
    assert {"stage 1 s", "stage 2 s", "peak GiB", "batch"} <= set(header)
    (row,) = rows
    cells = dict(zip(header, row))
    assert cells["case"] == "float32" and cells["naive s"] == "-" and cells["ratio"] == "1.00"
    assert cells["max abs diff"] == "0" and cells["Spearman min"] == "1.0000"
    assert cells["batch"] == str(CPU_BATCH_SIZE)
    assert float(cells["share of peak"].rstrip("%")) > 0
    # one layer of 8 heads and an MLP, per experiment and prompt
    assert len(out["results"]["float32"]["changes"]) == 4 * 2
    assert all(len(c) == 9 for c in out["results"]["float32"]["changes"].values())


@pytest.mark.slow  # models at Gemma-2-2b widths, bfloat16 matmuls on a CPU: 15-20 s on 2 cores
def test_gpu_workload_without_reference_on_one_experiment_extrapolates_stage_2(monkeypatch, capsys):
    """--experiments 1 --no-reference (the 9b/27b GPU checks): only the first experiment's
    source and target are built for stage 2, nothing is compared, and stage 2's time is
    scaled to the four experiments."""
    built = []
    real_build = gpu_workload.build_model
    monkeypatch.setattr(gpu_workload, "build_model", lambda i, *a, **k: built.append(i) or real_build(i, *a, **k))
    out = gpu_workload.main(["--device", "cpu", "--size", "2b", "--layers", "1", "--vocab", "256", "--seq-len", "16",
                             "--quick", "--modes", "bfloat16", "--no-reference", "--experiments", "1", "--profile"])
    printed = capsys.readouterr().out
    assert "stage 2 from 1 of 4 experiments" in printed
    # --profile: one sweep's ops by self time, its matrix products among them; not in the timings
    assert "one prompt's sweep in bfloat16, by self device time" in printed and "aten::" in printed
    assert built == [0, 1, 2, 3, 4, 2]  # stage 2: PT2 -> PT3De's target only
    assert list(out["results"]) == ["bfloat16"] and len(out["results"]["bfloat16"]["changes"]) == 2
    (row,) = out["rows"]
    assert row["top-10 min"] == "-" and math.isnan(row["Spearman min"]) and math.isnan(row["ratio"])
    assert row["stage 2 s"] == pytest.approx(out["results"]["bfloat16"]["stage2"] * 15 / 2 * 4)


@pytest.mark.slow  # three models at Gemma-2-2b widths (1 layer): about 8 s on 2 cores
def test_models_rebuilt_one_at_a_time_are_the_same_weights():
    """Building model k again gives identical weights (stage 2 rebuilds its targets), and
    the fine-tuned models differ from the base in linear layers only."""
    config = gpu_workload.gemma2_config("2b", 1, vocab=64, sliding_window=8)
    first, again, base = (gpu_workload.build_model(i, config, "cpu", "float32") for i in (2, 2, 0))
    a, b, c = (dict(m.model.named_parameters()) for m in (first, again, base))
    assert all(torch.equal(a[k], b[k]) for k in a)
    changed = {k for k in a if not torch.equal(a[k], c[k])}
    assert changed and all("proj" in k for k in changed)


# ---- the other benchmarks' tables ----------------------------------------------------------

@pytest.mark.slow  # models at Gemma-2-2b widths (2 layers): about 13 s on 2 cores
def test_steering_benchmark_prints_one_table(capsys):
    import steering_benchmark

    steering_benchmark.main(["--device", "cpu", "--layers", "2", "--vocab", "256", "--seq-len", "12",
                             "--naive-sample", "1"])
    header, rows = table_rows(capsys.readouterr().out)
    assert header[:len(SHARED_COLUMNS)] == SHARED_COLUMNS
    assert [r[0] for r in rows] == ["per layer", "one pass"]
    assert all(float(r[header.index("max abs diff")]) < 1e-4 for r in rows)


def test_patching_benchmark_rows_print_one_table(capsys):
    import patching_benchmark

    target, source = lora_like_pair(tiny_gemma2, seed=3)
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(0))
    rows = patching_benchmark.run_case("tiny", target, source, TOKENS, ids, repeats=1, peak_flops=1e9)
    capsys.readouterr()
    header, printed = table_rows(patching_benchmark.print_rows(rows))
    assert header[:len(SHARED_COLUMNS)] == SHARED_COLUMNS
    assert [r[0] for r in printed] == ["tiny, all", "tiny, decision"]
    assert all(r["max_abs_diff"] < 1e-5 for r in rows)
    w = common.Widths.of(target)
    assert rows[0]["share_of_peak"] == pytest.approx(common.patching_flops(w, 12) / rows[0]["t_ours_s"] / 1e9)


# ---- PatchRunner's batch size ----------------------------------------------------------------

def gemma2_spec(size):
    config = gpu_workload.gemma2_config(size)
    return ArchSpec.from_config(config), config.intermediate_size


def test_gpu_batch_size_shrinks_with_free_memory():
    spec, d_mlp = gemma2_spec("27b")
    # per row, float32, 210 positions: 12 d_model + 3 MLP + 2 x 32 heads' scores over 210 keys
    # + 2 x 32 heads' outputs of width d_model (hook_result and its patched copy)
    per_row = 4 * 210 * (12 * 4608 + 3 * 36864 + 2 * 32 * 210 + 2 * 32 * 4608)
    assert patch_row_bytes(spec, d_mlp, 210) == per_row == 398_361_600
    sizes = [gpu_batch_size(spec, d_mlp, 210, free) for free in (200e9, 40e9, 10e9, 1e9, 1e6)]
    # half the free memory over the row's bytes, rounded down to a power of two
    assert sizes == [128, 32, 8, 1, 1]  # 251 -> 128, 50.2 -> 32, 12.6 -> 8, 1.26 -> 1, 0 -> 1
    small, d_small = gemma2_spec("2b")
    assert gpu_batch_size(small, d_small, 210, 40e9) > gpu_batch_size(spec, d_mlp, 210, 40e9)
    assert gpu_batch_size(small, d_small, 210, 1e15) == 1024  # capped
    # decision-position patches: one query position per row, plus its copy of the keys and values
    assert patch_row_bytes(spec, d_mlp, 210, "decision") == 4 * (12 * 4608 + 3 * 36864 + 2 * 32 * 210
                                                                 + 2 * 32 * 4608) + 4 * 2 * 16 * 128 * 210
    assert patch_row_bytes(spec, d_mlp, 210, head_site="z") == 4 * 210 * (12 * 4608 + 3 * 36864 + 2 * 32 * 210)


@pytest.fixture(scope="module")
def pair():
    target, source = lora_like_pair(tiny_gemma2, seed=3)
    ids = torch.randint(0, 97, (1, 20), generator=torch.Generator().manual_seed(1))
    W_O = torch.stack([source.W_O(layer) for layer in range(source.n_layers)])
    return target, source, ids, W_O


def test_cpu_default_batch_size_is_unchanged(pair):
    target, _, _, W_O = pair
    assert PatchRunner(target, W_O, TOKENS).rows_per_pass(20) == CPU_BATCH_SIZE == 64
    assert PatchRunner(target, W_O, TOKENS, batch_size=3).rows_per_pass(20) == 3


@pytest.mark.parametrize("positions", ["all", "decision"])
def test_batch_size_changes_no_patch_result(pair, positions):
    """One patch set per pass, a few, and the default: the same deltas (to float32 rounding),
    all equal to the naive reference; with controls, one per batch."""
    target, source, ids, W_O = pair
    src = PromptActivations.from_run(source, ids, TOKENS)
    tgt = PromptActivations.from_run(target, ids, TOKENS)
    results = {}
    for batch_size in (1, 4, None):
        runner = PatchRunner(target, W_O, TOKENS, positions, "result", batch_size=batch_size,
                             pass_overhead_flops=0.0)  # one group per start layer, whatever the batch size
        controls: list = []
        results[batch_size] = np.array([r.patched_delta for r in sweep(runner, src, tgt, controls)])
        n_sets = target.n_heads + 1
        per_layer = n_sets if batch_size == 1 else -(-n_sets // ((batch_size or 64) - 1))  # batches per layer
        assert len(controls) == target.n_layers * per_layer
    assert np.abs(results[1] - results[None]).max() < 1e-6
    assert np.abs(results[4] - results[None]).max() < 1e-6
    comps = all_components(target.n_layers, target.n_heads)
    for i in (0, 5, len(comps) - 1):
        expected = naive_patched_delta(target, ids, src, W_O, comps[i], positions, "result", TOKENS)
        assert abs(results[None][i] - expected) < 1e-5
    assert abs(results[None][0] - tgt.delta) > 1e-4  # patches do change something
    assert comps[0] == Component(0, 0)


def test_cache_storage_benchmark_prints_one_table_and_float32_storage_changes_nothing(capsys):
    import cache_storage_benchmark

    rows = cache_storage_benchmark.main(["--layers", "1", "--vocab", "512", "--seq-len", "16", "--prompts", "1",
                                         "--repeats", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("machine: ")
    assert sum(line.startswith("|---") for line in out.splitlines()) == 1
    by_storage = {(r["dtype"], r["compression"]): r for r in rows}
    assert len(by_storage) == 6
    for (dtype, _), r in by_storage.items():
        if dtype == "float32":
            assert r["dla_diff"] == 0 and r["lens_diff"] == 0
        else:  # float16 rounds each activation to 2^-11 of itself: a change, but a small one
            assert 0 < r["dla_diff"] < 1e-2
    assert by_storage["float16", "none"]["MB"] < 0.6 * by_storage["float32", "none"]["MB"]
