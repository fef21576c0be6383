"""BatchTopK crosscoder (interp_lib/diffing/crosscoder.py) on a planted multi-model dictionary."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from interp_lib.diffing.crosscoder import (
    Crosscoder,
    CrosscoderConfig,
    fraction_of_variance_explained,
    latent_classes,
    latent_scaling,
    normalisation_scales,
    pca_baseline_fve,
    reconstruct,
    train_crosscoder,
)

torch.set_num_threads(1)  # the machine is shared; also keeps CPU training bit-reproducible

M, D = 3, 16
CONFIG = CrosscoderConfig(n_latents=64, k=3, steps=600, batch_size=256, lr=1e-2, dead_after=50, seed=0)


def planted(n_tokens: int, seed: int = 0, n_shared: int = 24, n_own: int = 8, active: int = 3,
            noise: float = 0.01) -> np.ndarray:
    """[N, M, D]: 24 latents with the same unit direction in every model, 8 present in one model only
    (per model); each token has `active` random latents with magnitudes in [0.5, 2], plus noise."""
    rng = np.random.default_rng(seed)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    n_true = n_shared + M * n_own
    dirs = np.zeros((n_true, M, D))
    dirs[:n_shared] = unit(rng.normal(size=(n_shared, D)))[:, None, :]
    for m in range(M):
        dirs[n_shared + m * n_own:n_shared + (m + 1) * n_own, m] = unit(rng.normal(size=(n_own, D)))
    chosen = np.argsort(rng.random((n_tokens, n_true)), axis=1)[:, :active]
    codes = np.zeros((n_tokens, n_true))
    np.put_along_axis(codes, chosen, rng.uniform(0.5, 2.0, size=chosen.shape), axis=1)
    x = np.einsum("in,nmd->imd", codes, dirs) + noise * rng.normal(size=(n_tokens, M, D))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    x = planted(6000)
    x = (x * normalisation_scales(x)[None, :, None]).astype(np.float32)
    train, test = x[:5000], x[5000:]
    model, history = train_crosscoder(train, CONFIG)
    return model, history, train, test


def test_normalisation_scales_bring_every_model_to_mean_squared_norm_d():
    factor = np.array([0.5, 3.0, 20.0], dtype=np.float32)
    x = planted(500) * factor[None, :, None]
    s = normalisation_scales(x)
    scaled = x.astype(np.float64) * s[None, :, None]
    for m in range(M):
        assert np.mean([np.dot(row, row) for row in scaled[:, m]]) == pytest.approx(D, rel=1e-6)
    np.testing.assert_allclose(s * factor, normalisation_scales(planted(500)), rtol=1e-5)  # stream scales undone


def test_batch_topk_keeps_k_times_batch_and_inference_l0_is_near_k(trained):
    model, history, train, _ = trained
    batch = torch.from_numpy(train[:128])
    with torch.no_grad():
        f = model.encode(batch, batch_topk=True).numpy()
    assert f.shape == (128, CONFIG.n_latents)
    assert int((f > 0).sum()) == CONFIG.k * 128
    # the kept set is the k*B largest scores computed here from the weights
    w_enc, b_enc = model.W_enc.detach().numpy(), model.b_enc.detach().numpy()
    act = np.maximum(np.einsum("bmd,mdn->bn", train[:128], w_enc) + b_enc, 0)
    score = act * np.linalg.norm(model.W_dec.detach().numpy(), axis=2).sum(axis=1)
    cut = np.sort(score.ravel())[-CONFIG.k * 128]
    np.testing.assert_array_equal(f > 0, score >= cut)
    np.testing.assert_allclose(f[f > 0], act[f > 0], rtol=1e-5)
    _, f_inf = reconstruct(model, train)
    assert abs((f_inf > 0).sum(axis=1).mean() - CONFIG.k) <= 0.3 * CONFIG.k
    # history: logged every steps // 100 steps, training L0 is k, late loss below early loss
    assert list(history.columns) == ["step", "loss", "mse", "aux_loss", "l0", "dead"]
    assert history["step"].tolist() == list(range(6, 601, 6))
    assert (history["l0"] == CONFIG.k).all()
    assert history["mse"].iloc[-10:].mean() < 0.3 * history["mse"].iloc[:3].mean()
    assert model.threshold.item() > 0


def test_fve_matches_a_loop_and_the_crosscoder_beats_pca(trained):
    model, _, train, test = trained
    rng = np.random.default_rng(1)
    x, x_hat = rng.normal(size=(50, M, D)), rng.normal(size=(50, M, D))
    by_hand = []
    for m in range(M):
        mean = sum(x[i, m] for i in range(50)) / 50
        err = sum(float(np.dot(x[i, m] - x_hat[i, m], x[i, m] - x_hat[i, m])) for i in range(50))
        tot = sum(float(np.dot(x[i, m] - mean, x[i, m] - mean)) for i in range(50))
        by_hand.append(1 - err / tot)
    np.testing.assert_allclose(fraction_of_variance_explained(x, x_hat), by_hand, rtol=1e-12)

    test_hat, f = reconstruct(model, test)
    fve = fraction_of_variance_explained(test, test_hat)
    l0 = round(float((f > 0).sum(axis=1).mean()))
    pca = pca_baseline_fve(train, test, l0)
    assert (fve > 0.8).all(), fve
    assert (fve > pca).all(), (fve, pca)

    # PCA baseline against a direct SVD reconstruction
    flat_train, flat_test = train.reshape(len(train), -1).astype(np.float64), test.reshape(len(test), -1)
    mu = flat_train.mean(axis=0)
    _, _, vt = np.linalg.svd(flat_train - mu, full_matrices=False)
    v = vt[:l0].T
    rebuilt = (mu + (flat_test - mu) @ v @ v.T).reshape(test.shape)
    np.testing.assert_allclose(pca, fraction_of_variance_explained(test, rebuilt), atol=1e-6)


def _planted_scale_model(scale: float, n_tokens: int = 400, seed: int = 0):
    """A hand-made 2-model crosscoder: latent 0 decodes u into model 0 and nothing into model 1,
    although model 1 carries scale * f * u; latent 1 is v in both; latent 2 never fires."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    u, v = q[:, 0], q[:, 1]
    c = rng.normal(size=(2, 8))  # decoder bias, present in the data
    f0 = rng.uniform(0, 2, n_tokens) * (rng.random(n_tokens) < 0.6)
    f1 = rng.uniform(0, 2, n_tokens) * (rng.random(n_tokens) < 0.6)
    x = np.stack([c[0] + f0[:, None] * u + f1[:, None] * v,
                  c[1] + scale * f0[:, None] * u + f1[:, None] * v], axis=1).astype(np.float32)
    model = Crosscoder(2, 8, CrosscoderConfig(n_latents=3, k=1))
    with torch.no_grad():
        w_enc, w_dec = np.zeros((2, 8, 3)), np.zeros((3, 2, 8))
        w_enc[0, :, 0] = u
        w_enc[:, :, 1] = v / 2
        w_dec[0, 0], w_dec[1, 0], w_dec[1, 1] = u, v, v
        w_dec[2] = rng.normal(size=(2, 8))
        b_enc = [-u @ c[0], -(v @ c[0] + v @ c[1]) / 2, -1.0]
        for name, value in [("W_enc", w_enc), ("W_dec", w_dec), ("b_enc", b_enc), ("b_dec", c)]:
            getattr(model, name).copy_(torch.tensor(np.asarray(value), dtype=torch.float32))
    return model, x


def test_latent_scaling_recovers_a_planted_scale():
    model, x = _planted_scale_model(0.3)
    nu_rec, nu_err = latent_scaling(model, x, batch_size=64)  # several batches accumulated
    assert nu_err[0, 1] == pytest.approx(0.3, abs=1e-3)
    assert nu_rec[0, 1] == pytest.approx(0.0, abs=1e-3)
    assert nu_err[0, 0] == pytest.approx(1.0) and nu_rec[0, 0] == pytest.approx(1.0)
    np.testing.assert_allclose(nu_err[1], [1, 1], atol=1e-3)
    np.testing.assert_allclose(nu_rec[1], [1, 1], atol=1e-3)
    assert np.isnan(nu_err[2]).all() and np.isnan(nu_rec[2]).all()


def test_latent_scaling_equals_a_least_squares_fit_on_a_trained_model(trained):
    model, _, _, test = trained
    nu_rec, nu_err = latent_scaling(model, test, batch_size=300)
    x_hat, f = reconstruct(model, test)
    w_dec, b_dec = model.W_dec.detach().double().numpy(), model.b_dec.detach().double().numpy()
    for j in np.flatnonzero((f > 0).any(axis=0))[:5]:
        r = int(np.argmax(np.linalg.norm(w_dec[j], axis=1)))
        design = (f[:, j, None].astype(np.float64) * w_dec[j, r]).ravel()[:, None]  # f_ij d_j, stacked
        fits = {}
        for kind, target in [("rec", x_hat - b_dec), ("err", test - x_hat + f[:, j, None, None] * w_dec[j])]:
            fits[kind] = [np.linalg.lstsq(design, target[:, m].astype(np.float64).ravel(), rcond=None)[0][0]
                          for m in range(M)]
        np.testing.assert_allclose(nu_rec[j], np.array(fits["rec"]) / fits["rec"][r], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(nu_err[j], np.array(fits["err"]) / fits["err"][r], rtol=1e-4, atol=1e-5)


def test_latent_classes_on_a_hand_made_table():
    models = ["base", "game", "moral_a", "moral_b"]
    table = {  # latent: (decoder norms, nu_err, expected present_in, expected class)
        "dead": ([1, 1, 1, 1], [np.nan] * 4, "base+game+moral_a+moral_b", "dead"),
        "shared": ([1, 0.9, 0.8, 0.7], [1, 0.9, 0.9, 0.9], "base+game+moral_a+moral_b", "shared"),
        "base": ([2, 0.1, 0.1, 0.1], [1, 0, 0.1, 0], "base", "base-only"),
        "ft": ([0.1, 1, 0.9, 0.6], [0, 1, 1, 0.5], "game+moral_a+moral_b", "fine-tune-only"),
        "moral1": ([0, 0, 0, 3], [0, 0, 0, 1], "moral_b", "moral-only"),
        "moral2": ([0.2, 0.2, 1, 0.5], [0.1, 0, 1, 0.6], "moral_a+moral_b", "moral-only"),
        "game": ([0, 1, 0.4, 0], [0, 1, 0.3, 0.2], "game", "game-only"),
        "other": ([1, 1, 0, 0], [1, 1, 0, 0], "base+game", "other"),
        "rescue": ([1, 0.1, 0.1, 0.1], [1, 0.8, 0.2, 0.1], "base+game", "other"),  # Latent Scaling keeps game
        "rescue_shared": ([1, 0.1, 1, 1], [1, 0.8, 1, 1], "base+game+moral_a+moral_b", "shared"),
    }
    norms = np.array([row[0] for row in table.values()], dtype=float)
    nu = np.array([row[1] for row in table.values()], dtype=float)
    out = latent_classes(norms, nu, models, base="base", strategic="game", moral=["moral_a", "moral_b"])
    assert out["latent"].tolist() == list(range(len(table)))
    assert out["present_in"].tolist() == [row[2] for row in table.values()]
    assert out["class"].tolist() == [row[3] for row in table.values()]
    assert out["reference_model"].tolist()[1:5] == ["base", "base", "game", "moral_b"]
    np.testing.assert_allclose(out["relative_norm_base"], [1, 1, 1, 0.1, 0, 0.2, 0, 1, 1, 1])
    np.testing.assert_allclose(out.loc[2, [f"relative_norm_{m}" for m in models]].astype(float), [1, .05, .05, .05])
    # without the nu_err rescue, "rescue" would be base-only
    assert latent_classes(norms, np.where(np.isnan(nu), np.nan, 0), models, "base", "game",
                          ["moral_a", "moral_b"]).loc[8, "class"] == "base-only"


def test_save_load_round_trip_and_seeded_training(trained, tmp_path):
    model, _, train, _ = trained
    meta = {"models": ["base", "game", "moral"], "layer": 7}
    model.save(tmp_path / "cc.safetensors", meta)
    loaded, meta_back = Crosscoder.load(tmp_path / "cc.safetensors")
    assert meta_back == meta and loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    x = torch.from_numpy(train[:200])
    with torch.no_grad():
        assert torch.equal(model.encode(x), loaded.encode(x))

    small = dataclasses.replace(CONFIG, n_latents=32, steps=40, batch_size=64, dead_after=5)
    a, _ = train_crosscoder(train[:1000], small)
    b, _ = train_crosscoder(train[:1000], small)
    c, _ = train_crosscoder(train[:1000], dataclasses.replace(small, seed=1))
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    assert not torch.equal(a.W_dec, c.W_dec)


@pytest.mark.parametrize("make, message", [
    (lambda: CrosscoderConfig(n_latents=8, k=8), "k must be < n_latents, got k=8"),
    (lambda: CrosscoderConfig(steps=0), "steps must be >= 1"),
    (lambda: train_crosscoder(np.zeros((10, 48), np.float32), CrosscoderConfig(n_latents=8, k=2)), "3-D"),
    (lambda: train_crosscoder(np.full((10, 2, 4), np.nan, np.float32), CrosscoderConfig(n_latents=8, k=2)),
     "NaN"),
    (lambda: Crosscoder(2, 4, CrosscoderConfig(n_latents=8, k=2)).save("unused.safetensors", {"layer": 3}),
     "'models'"),
    (lambda: reconstruct(Crosscoder(2, 4, CrosscoderConfig(n_latents=8, k=2)), np.zeros((5, 3, 4))), "expects"),
    (lambda: latent_classes(np.ones((2, 2)), np.ones((2, 2)), ["a", "b"], "a", "z", []), "'z'"),
])
def test_bad_input_raises_one_line_value_error(make, message):
    with pytest.raises(ValueError, match=message) as info:
        make()
    assert "\n" not in str(info.value)
