"""Cache storage options (cache.CacheStorage; config analysis.cache_dtype / cache_compression):
float16 storage within float16 rounding of float32 storage, compression bit-exact, attrs,
the DLA reconstruction error float16 adds against its rounding bound, older files, bad values."""

from __future__ import annotations

import copy
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from interp_lib.cache import (ACTIVATIONS, CHUNK_BYTES, FORMAT_VERSION, CacheError, CacheFile, CacheStorage,
                              collect_variant, file_attrs, unembed_arrays, write_cache)
from interp_lib.config import ConfigError, validate_config
from interp_lib.analyses.dla import results_from_cache, storage_error_bound
from interp_lib.model.hooked import HookedModel
from interp_lib.analyses.logit_lens import ActionReadout
from test_hooked import tiny_gemma2

REPO = Path(__file__).resolve().parents[1]
ACTIONS = {"C": 5, "D": 7, "prefix": [3]}
UNIT_ROUNDOFF_F16, HALF_SUBNORMAL_F16 = 2.0 ** -11, 2.0 ** -25


@pytest.fixture(scope="module")
def model():
    """Random Gemma-2 with post-norms and both softcaps (test_hooked's tiny_gemma2)."""
    return HookedModel(tiny_gemma2(), name="tiny")


@pytest.fixture(scope="module")
def variants(model):
    gen = torch.Generator().manual_seed(2)
    out = {}
    for v in (1, 2):
        data = collect_variant(model, torch.randint(0, 97, (1, 20 + 5 * v), generator=gen), ACTIONS)
        data["attrs"]["prompt"] = f"prompt {v}"
        out[v] = data
    return out


def write(model, variants, path, dtype="float32", compression="none"):
    write_cache(path, file_attrs(model, "tiny", "toy", "fp", "th", ACTIONS), unembed_arrays(model, ACTIONS), variants,
                CacheStorage(dtype, compression))
    return path


def read_all(path) -> dict:
    with CacheFile(path) as cache:
        return {(v, key): cache[v][key] for v in cache.variants for key in cache.group(v).keys()}


def test_float16_storage_reads_back_as_float32_within_float16_rounding(model, variants, tmp_path):
    f32 = read_all(write(model, variants, tmp_path / "f32.h5"))
    f16 = read_all(write(model, variants, tmp_path / "f16.h5", "float16"))
    assert f32.keys() == f16.keys() and len(f32) == 2 * 15
    rounded = 0
    for (v, key), exact in f32.items():
        got = f16[v, key]
        np.testing.assert_array_equal(exact, variants[v]["arrays"][key])  # float32 storage: as computed
        assert got.dtype == exact.dtype  # float32 (int64 for input_ids)
        if key in ACTIVATIONS:
            # round to nearest: relative error <= 2^-11 for normal numbers, absolute <= 2^-25 below
            assert (np.abs(got - exact) <= UNIT_ROUNDOFF_F16 * np.abs(exact) + HALF_SUBNORMAL_F16).all(), key
            rounded += int((got != exact).sum())
        else:  # scales, decision logits, ids stay exact
            np.testing.assert_array_equal(got, exact)
    assert rounded > 1000  # the storage did round
    # the activations are all but a few kB of the file, and take half the bytes
    ratio = (tmp_path / "f16.h5").stat().st_size / (tmp_path / "f32.h5").stat().st_size
    assert 0.5 < ratio < 0.6


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("compression", ["lzf", "gzip"])
def test_compression_round_trips_bit_exactly(model, variants, tmp_path, dtype, compression):
    plain = read_all(write(model, variants, tmp_path / "plain.h5", dtype))
    path = write(model, variants, tmp_path / "packed.h5", dtype, compression)
    packed = read_all(path)
    assert plain.keys() == packed.keys()
    for k in plain:
        np.testing.assert_array_equal(packed[k], plain[k], err_msg=str(k))
    with h5py.File(path) as f:
        ds = f["1/resid_post"]
        assert (ds.compression, ds.shuffle) == (compression, True)
        L, T, d = ds.shape
        per_position = L * d * ds.dtype.itemsize
        assert ds.chunks == (L, min(T, -(-CHUNK_BYTES // per_position)), d)  # every layer of a few positions
        if compression == "gzip":  # lzf can come out larger on float16 (docs/analyses.md: Cache storage)
            assert ds.id.get_storage_size() < 0.97 * ds.nbytes


def test_attrs_record_storage(model, variants, tmp_path):
    with h5py.File(write(model, variants, tmp_path / "plain.h5", "float16")) as f:
        assert f["1/resid_post"].chunks is None  # uncompressed: contiguous
    path = write(model, variants, tmp_path / "c.h5", "float16", "gzip")
    with CacheFile(path) as cache:
        assert (cache.attrs["storage_dtype"], cache.attrs["compression"]) == ("float16", "gzip")
        assert cache.attrs["format_version"] == FORMAT_VERSION == 5
        assert cache.attrs["dtype"] == "float32"  # the model's, unchanged
    with h5py.File(path) as f:
        assert f["1/z"].dtype == np.float16 and f["1/ln1_scale"].dtype == np.float32
        assert f["unembed/W_U_actions"].dtype == np.float32


def hand_dla(arrays, attrs, model):
    """(components [1 + L*H + L], bound on the change of their sum by float16 rounding, that
    change's standard deviation at most) in float64, from the float32 arrays:
    u = (W_U[D] - W_U[C]) * (1 + w_final) / s_final."""
    pos = int(attrs["decision_position"])
    W_U = model.W_U.detach().double().numpy()
    gain = model.final_norm_gain().detach().double().numpy()
    u = (W_U[ACTIONS["D"]] - W_U[ACTIONS["C"]]) * gain / float(arrays["ln_final_scale"][pos])
    heads, mlps = arrays["head_out_decision"], arrays["mlp_out"][:, pos]
    vectors = np.concatenate([arrays["embed"][pos][None]]  # in DLAResult.components' order
                             + [np.concatenate([heads[l], mlps[l][None]]) for l in range(len(mlps))]).astype(np.float64)
    bound = sum(float(np.abs(vec) @ np.abs(u)) * UNIT_ROUNDOFF_F16 + HALF_SUBNORMAL_F16 * float(np.abs(u).sum())
                for vec in vectors)
    # rounding errors of independent signs, each at most 2^-11 |x| (standard deviation <= 2^-11 |x| / sqrt(3))
    sigma = UNIT_ROUNDOFF_F16 / np.sqrt(3) * float(np.sqrt(((vectors * u) ** 2).sum()))
    return vectors @ u, bound, sigma


def test_dla_reconstruction_error_of_float16_storage_is_within_its_rounding_bound(model, variants, tmp_path):
    results = {}
    for dtype in ("float32", "float16"):
        with CacheFile(write(model, variants, tmp_path / f"{dtype}.h5", dtype)) as cache:
            results[dtype] = results_from_cache(cache)
            if dtype == "float16":
                readout = ActionReadout.from_cache(cache)
                library_bounds = [storage_error_bound(cache.group(v), cache.group(v).attrs, readout, dtype)
                                  for v in cache.variants]
    for i, (v, data) in enumerate(sorted(variants.items())):
        exact, bound, sigma = hand_dla(data["arrays"], data["attrs"], model)
        r32, r16 = results["float32"][i], results["float16"][i]
        c32 = np.array([c[-1] for c in r32.components()])
        c16 = np.array([c[-1] for c in r16.components()])
        np.testing.assert_allclose(c32, exact, rtol=1e-9, atol=1e-12)  # the same components, by hand
        assert abs(r32.reconstruction_error) < 1e-4 * max(1.0, abs(r32.final_delta_pre_softcap))
        change = r16.reconstruction_error - r32.reconstruction_error  # = sum of the components' rounding
        assert 0 < abs(change) <= bound, (change, bound)
        assert np.abs(c16 - c32).sum() <= bound
        assert library_bounds[i] == pytest.approx(bound, rel=1e-3)  # computed from the rounded arrays
        # the bound is loose: errors of random sign cancel, to within a few standard deviations
        assert abs(change) < 4 * sigma < 0.2 * bound, (change, sigma, bound)


def test_version_3_files_are_read_as_float32_and_others_refused(model, variants, tmp_path):
    path = write(model, variants, tmp_path / "c.h5")
    with h5py.File(path, "r+") as f:  # what interp_lib wrote before storage options
        f.attrs["format_version"] = 3
        del f.attrs["storage_dtype"], f.attrs["compression"]
    with CacheFile(path) as cache:
        assert [r.reconstruction_error for r in results_from_cache(cache)]
        np.testing.assert_array_equal(cache[1]["z"], variants[1]["arrays"]["z"])
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(CacheError) as info:
        CacheFile(path)
    assert str(info.value) == (f"{path} has cache format version 2, this interp_lib reads versions 3, 4, 5; delete {path} "
                               f"and rerun the workflow (snakemake --cores 1 {path})")


def test_activations_beyond_float16_range_are_refused(model, variants, tmp_path):
    big = copy.deepcopy(variants)
    big[2]["arrays"]["mlp_out"][1, 3, 4] = 7.0e4
    path = tmp_path / "c.h5"
    with pytest.raises(CacheError) as info:
        write(model, big, path, "float16")
    assert str(info.value) == (f"{path}: variant 2, mlp_out reaches 7e+04, beyond float16's range; "
                               "set analysis.cache_dtype: float32")
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
    write(model, big, path, "float32")  # float32 holds it
    assert read_all(path)[2, "mlp_out"][1, 3, 4] == 7.0e4


def config_error(**analysis) -> str:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["analysis"].update(analysis)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_config_defaults_and_bad_values():
    cfg = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    assert (cfg["analysis"]["cache_dtype"], cfg["analysis"]["cache_compression"]) == ("float32", "none")
    assert config_error(cache_dtype="bfloat16") == \
        "config: analysis.cache_dtype: 'bfloat16' is not one of ['float32', 'float16']"
    assert config_error(cache_compression="zstd") == \
        "config: analysis.cache_compression: 'zstd' is not one of ['none', 'lzf', 'gzip']"
    with pytest.raises(ValueError, match=r"^analysis.cache_dtype: 'float64' is not one of float32, float16$"):
        CacheStorage("float64")
