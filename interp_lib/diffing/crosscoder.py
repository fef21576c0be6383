"""BatchTopK crosscoder: one sparse dictionary over the residual streams of M models at one layer.

Lindsey et al. 2024 ("Sparse crosscoders"): a latent j reads all models' activations through one
encoder and writes a decoder row W_dec[j, m] into each model m; a latent whose decoder is large in
some models and near zero in others is specific to those models. Sparsity is BatchTopK (Bussmann
et al. 2024, arXiv 2412.06410): a training batch keeps its k * B largest latent scores, and a
threshold learnt in training replaces the batch at inference. Scores are weighted by the sum over
models of decoder norms, and models' latents are compared through Latent Scaling, following
Minder et al. 2025 (arXiv 2504.02922).

Why our own loop: neither sae-lens 6.x nor dictionary-learning 0.1.0 (PyPI) trains a crosscoder
over several models, so the short training loop is written here in torch.

Shapes: N tokens, M models, d residual width, n latents.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

PRESENCE = 0.5
DECODER_INIT_NORM = 0.1  # per model row, as Anthropic's crosscoder init (small and equal in every model)
DECAY_FRACTION = 0.2  # lr decays linearly to 0 over this final fraction of the steps
METADATA_KEY = "interp_lib_crosscoder"


@dataclass(frozen=True)
class CrosscoderConfig:
    n_latents: int = 512
    k: int = 16  # mean active latents per token (BatchTopK keeps k * batch activations per batch)
    steps: int = 2000
    batch_size: int = 512
    lr: float = 1e-3
    aux_k: int = 64  # AuxK: dead latents' top-aux_k reconstruct the residual error (Gao et al. 2024)
    aux_coef: float = 1 / 32
    dead_after: int = 200  # a latent not fired for this many steps is dead (for AuxK)
    seed: int = 0

    def __post_init__(self):
        for name in ("n_latents", "k", "steps", "batch_size", "dead_after"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"crosscoder {name} must be >= 1, got {name}={getattr(self, name)}")
        if self.k >= self.n_latents:
            raise ValueError(f"crosscoder k must be < n_latents, got k={self.k}, n_latents={self.n_latents}")
        if self.aux_k < 0 or self.aux_coef < 0 or not self.lr > 0:
            raise ValueError(f"crosscoder needs aux_k >= 0, aux_coef >= 0, lr > 0, got aux_k={self.aux_k}, "
                             f"aux_coef={self.aux_coef}, lr={self.lr}")


class Crosscoder(torch.nn.Module):
    """W_enc [M, d, n], b_enc [n], W_dec [n, M, d], b_dec [M, d]; buffer `threshold` (scalar score
    above which a latent fires at inference). Parameters start at zero: train_crosscoder initialises."""

    def __init__(self, n_models: int, d_model: int, config: CrosscoderConfig = CrosscoderConfig()):
        super().__init__()
        self.config = config
        n = config.n_latents
        self.W_enc = torch.nn.Parameter(torch.zeros(n_models, d_model, n))
        self.b_enc = torch.nn.Parameter(torch.zeros(n))
        self.W_dec = torch.nn.Parameter(torch.zeros(n, n_models, d_model))
        self.b_dec = torch.nn.Parameter(torch.zeros(n_models, d_model))
        self.register_buffer("threshold", torch.zeros(()))

    n_models = property(lambda self: self.W_dec.shape[1])
    d_model = property(lambda self: self.W_dec.shape[2])

    def decoder_norms(self) -> torch.Tensor:
        """[n, M]: ||W_dec[j, m]||."""
        return self.W_dec.norm(dim=2)

    def _pre(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, M, d] -> relu(sum_m x_m @ W_enc[m] + b_enc) [B, n]."""
        return torch.relu(torch.einsum("bmd,mdn->bn", x, self.W_enc) + self.b_enc)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, M, d] -> [B, n]: activations times the decoder norm sum, so that which latents are
        kept does not depend on how the scale is split between encoder and decoder."""
        return self._pre(x) * self.decoder_norms().sum(dim=1)

    def _select(self, pre: torch.Tensor, batch_topk: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(f [B, n], smallest kept positive score or None) from activations pre [B, n]."""
        scores = pre * self.decoder_norms().sum(dim=1)
        if not batch_topk:
            return pre * (scores > self.threshold), None
        values, idx = scores.flatten().topk(self.config.k * pre.shape[0])
        mask = torch.zeros_like(scores).flatten().scatter_(0, idx, 1.0).view_as(scores)
        positive = values[values > 0]
        return pre * mask, (positive.min().detach() if positive.numel() else None)

    def encode(self, x: torch.Tensor, batch_topk: bool = False) -> torch.Tensor:
        """x [B, M, d] -> latent activations f [B, n] (not multiplied by the norms). batch_topk: keep
        the k * B largest scores of the batch (training); else scores > threshold (inference)."""
        return self._select(self._pre(x), batch_topk)[0]

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """f [B, n] -> x_hat [B, M, d], x_hat_m = f @ W_dec[:, m] + b_dec[m]."""
        return torch.einsum("bn,nmd->bmd", f, self.W_dec) + self.b_dec

    def forward(self, x: torch.Tensor, batch_topk: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, M, d] -> (x_hat [B, M, d], f [B, n])."""
        f = self.encode(x, batch_topk)
        return self.decode(f), f

    def save(self, path, metadata: dict) -> None:
        """safetensors file (written to a temporary name and renamed); metadata (JSON-able, with
        "models": the M model names) and the config
        are stored as one JSON string in the file's metadata."""
        models = metadata.get("models")
        if not isinstance(models, (list, tuple)) or len(models) != self.n_models:
            raise ValueError(f"crosscoder metadata must hold 'models', a list of {self.n_models} names, "
                             f"got {models!r}")
        header = {"config": asdict(self.config), "n_models": self.n_models, "d_model": self.d_model,
                  "metadata": metadata}
        from ..io import atomic_path

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(header)})

    @classmethod
    def load(cls, path) -> tuple[Crosscoder, dict]:
        """(model, metadata) from a file written by save."""
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
        if raw is None:
            raise ValueError(f"{path}: not a crosscoder file (no {METADATA_KEY} metadata)")
        header = json.loads(raw)
        model = cls(header["n_models"], header["d_model"], CrosscoderConfig(**header["config"]))
        model.load_state_dict(load_file(str(path)))
        return model, header["metadata"]


def _check_x(x, what: str = "crosscoder x") -> np.ndarray:
    """x as float32 [N, M, d]; ValueError if not 3-D, empty or not finite."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"{what} must be 3-D [tokens, models, d_model], got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{what} is empty, shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"{what} holds NaN or inf values")
    return x


def _check_model_x(model: Crosscoder, x) -> np.ndarray:
    x = _check_x(x)
    if x.shape[1:] != (model.n_models, model.d_model):
        raise ValueError(f"crosscoder x has shape {x.shape}, the model expects [N, {model.n_models}, {model.d_model}]")
    return x


def normalisation_scales(x: np.ndarray) -> np.ndarray:
    """x [N, M, d] -> s [M] with mean_i ||s_m x_im||^2 = d: each model's stream at the same scale."""
    x = _check_x(x).astype(np.float64)
    mean_sq = (x ** 2).sum(axis=2).mean(axis=0)
    if (mean_sq == 0).any():
        raise ValueError(f"crosscoder x: model(s) {np.flatnonzero(mean_sq == 0).tolist()} have all-zero activations")
    return np.sqrt(x.shape[2] / mean_sq)


def _init_weights(model: Crosscoder, x: torch.Tensor, gen: torch.Generator) -> None:
    """Decoder rows: random directions of norm DECODER_INIT_NORM in every model; W_enc[m] = W_dec[:, m].T;
    b_enc = 0; b_dec = per-model mean of x [N, M, d]."""
    with torch.no_grad():
        w = torch.randn(model.W_dec.shape, generator=gen)
        model.W_dec.copy_(w / w.norm(dim=2, keepdim=True) * DECODER_INIT_NORM)
        model.W_enc.copy_(model.W_dec.permute(1, 2, 0))
        model.b_enc.zero_()
        model.b_dec.copy_(x.double().mean(dim=0).float())


def _aux_loss(model: Crosscoder, pre: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """AuxK (Gao et al. 2024): each token's top-aux_k dead latents (by score) reconstruct the detached
    residual [B, M, d], which gives dead latents a gradient towards what the live ones miss."""
    n_aux = min(model.config.aux_k, int(dead.sum()))
    if n_aux == 0:
        return pre.new_zeros(())
    scores = (pre * model.decoder_norms().sum(dim=1)).masked_fill(~dead, -1.0)
    _, idx = scores.topk(n_aux, dim=1)
    f_aux = torch.zeros_like(pre).scatter(1, idx, pre.gather(1, idx))
    err = torch.einsum("bn,nmd->bmd", f_aux, model.W_dec) - residual
    return err.pow(2).sum(dim=(1, 2)).mean()


def train_crosscoder(x: np.ndarray, config: CrosscoderConfig,
                     progress: bool = False) -> tuple[Crosscoder, pd.DataFrame]:
    """Train on x [N, M, d] (float32, already normalised). Returns (model, history) with history columns
    step, loss, mse, aux_loss, l0, dead, every max(1, steps // 100) steps. Same seed and data give
    bit-identical weights on CPU."""
    from tqdm.auto import tqdm

    x_t = torch.from_numpy(np.ascontiguousarray(_check_x(x)))
    n_tokens, n_models, d_model = x_t.shape
    gen = torch.Generator().manual_seed(config.seed)
    model = Crosscoder(n_models, d_model, config)
    _init_weights(model, x_t, gen)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    decay_steps = max(1, round(DECAY_FRACTION * config.steps))
    since_fired = torch.zeros(config.n_latents, dtype=torch.long)
    thr_sum, thr_count = 0.0, 0
    log_every, rows = max(1, config.steps // 100), []
    for step in tqdm(range(config.steps), desc="crosscoder", disable=not progress):
        for group in opt.param_groups:
            group["lr"] = config.lr * min(1.0, (config.steps - step) / decay_steps)
        batch = x_t[torch.randint(n_tokens, (config.batch_size,), generator=gen)]
        pre = model._pre(batch)
        f, smallest = model._select(pre, batch_topk=True)
        x_hat = model.decode(f)
        mse = (x_hat - batch).pow(2).sum(dim=(1, 2)).mean()
        fired = (f > 0).any(dim=0)
        since_fired = torch.where(fired, 0, since_fired + 1)
        dead = since_fired >= config.dead_after
        aux = _aux_loss(model, pre, (batch - x_hat).detach(), dead) if config.aux_coef > 0 else mse.new_zeros(())
        loss = mse + config.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # Bussmann et al.: the inference threshold is the mean smallest kept score late in training.
        if step >= config.steps // 2 and smallest is not None:
            thr_sum, thr_count = thr_sum + float(smallest), thr_count + 1
        if (step + 1) % log_every == 0 or step + 1 == config.steps:
            rows.append({"step": step + 1, "loss": loss.item(), "mse": mse.item(), "aux_loss": aux.item(),
                         "l0": (f > 0).sum(dim=1).float().mean().item(), "dead": int(dead.sum())})
    if thr_count:
        model.threshold.fill_(thr_sum / thr_count)
    return model.eval(), pd.DataFrame(rows, columns=["step", "loss", "mse", "aux_loss", "l0", "dead"])


def fraction_of_variance_explained(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """x, x_hat [N, M, d] -> FVE [M] (float64): 1 - sum||x_m - x_hat_m||^2 / sum||x_m - mean_i x_m||^2."""
    x, x_hat = np.asarray(x, dtype=np.float64), np.asarray(x_hat, dtype=np.float64)
    if x.ndim != 3 or x.shape != x_hat.shape:
        raise ValueError(f"FVE needs x and x_hat of the same 3-D shape, got {x.shape} and {x_hat.shape}")
    err = ((x - x_hat) ** 2).sum(axis=(0, 2))
    total = ((x - x.mean(axis=0)) ** 2).sum(axis=(0, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - err / total


def reconstruct(model: Crosscoder, x: np.ndarray, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Inference (threshold) on x [N, M, d] -> (x_hat [N, M, d], f [N, n]), float32 numpy."""
    x = _check_model_x(model, x)
    x_hats, fs = [], []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            x_hat, f = model(torch.from_numpy(x[start:start + batch_size]))
            x_hats.append(x_hat.numpy())
            fs.append(f.numpy())
    return np.concatenate(x_hats), np.concatenate(fs)


def pca_baseline_fve(train: np.ndarray, test: np.ndarray, n_components: int) -> np.ndarray:
    """PCA on train [N, M, d] flattened to [N, M*d] (centred); FVE [M] of test [N', M, d] rebuilt from
    n_components: the baseline a crosscoder of mean L0 = n_components must beat."""
    from sklearn.decomposition import PCA

    train, test = _check_x(train, "PCA train"), _check_x(test, "PCA test")
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(f"PCA train and test differ in [M, d]: {train.shape[1:]} vs {test.shape[1:]}")
    limit = min(train.shape[0], train.shape[1] * train.shape[2])
    if not 1 <= n_components <= limit:
        raise ValueError(f"PCA n_components must be in 1..{limit}, got {n_components}")
    flat = lambda a: a.reshape(len(a), -1).astype(np.float64)  # noqa: E731
    pca = PCA(n_components=n_components, svd_solver="full").fit(flat(train))
    test_hat = pca.inverse_transform(pca.transform(flat(test))).reshape(test.shape)
    return fraction_of_variance_explained(test, test_hat)


def latent_scaling(model: Crosscoder, x: np.ndarray, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Latent Scaling (Minder et al.) for M models: (nu_rec, nu_err) [n, M], float64.

    With r_j = argmax_m ||W_dec[j, m]||, d_j = W_dec[j, r_j] and f, x_hat at inference, beta[j, m] is the
    least-squares scale of f_ij d_j fitted to model m's target: x_hat_im - b_dec[m] (rec) or
    x_im - x_hat_im + f_ij W_dec[j, m] (err: the residual with latent j's own contribution put back).
    nu = beta / beta[j, r_j]; NaN where the latent never fires. A decoder norm near zero in m does not
    prove the latent absent from m (complete shrinkage): nu_err says how much of it m's activations hold.
    """
    x = _check_model_x(model, x)
    with torch.no_grad():
        w_dec = model.W_dec.double()
        ref = model.decoder_norms().argmax(dim=1)
        d = w_dec[torch.arange(len(ref)), ref]  # [n, d]
        b_dec = model.b_dec.double()
        num_rec = torch.zeros(w_dec.shape[:2], dtype=torch.float64)
        num_err, f_sq = torch.zeros_like(num_rec), torch.zeros(len(ref), dtype=torch.float64)
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[start:start + batch_size])
            x_hat, f = model(xb)
            f, x_hat, xb = f.double(), x_hat.double(), xb.double()
            # sum_i f_ij <d_j, y_im> as (f.T @ y) [n, M, d] contracted with d_j
            num_rec += torch.einsum("nmd,nd->nm", (f.T @ (x_hat - b_dec).flatten(1)).view(-1, *b_dec.shape), d)
            num_err += torch.einsum("nmd,nd->nm", (f.T @ (xb - x_hat).flatten(1)).view(-1, *b_dec.shape), d)
            f_sq += f.pow(2).sum(dim=0)
        num_err += f_sq[:, None] * torch.einsum("nmd,nd->nm", w_dec, d)
        denom = (f_sq * d.pow(2).sum(dim=1))[:, None]
        beta_rec, beta_err = (num_rec / denom).numpy(), (num_err / denom).numpy()
    rows, ref = np.arange(len(ref)), ref.numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        nu_rec = beta_rec / beta_rec[rows, ref][:, None]
        nu_err = beta_err / beta_err[rows, ref][:, None]
    never = f_sq.numpy() == 0
    nu_rec[never], nu_err[never] = np.nan, np.nan
    return nu_rec, nu_err


def _classify(present: set, models: list[str], base: str, strategic: str | None, moral: list[str]) -> str:
    if len(present) == len(models):
        return "shared"
    if present == {base}:
        return "base-only"
    if present == set(models) - {base}:
        return "fine-tune-only"
    if present and present <= set(moral):
        return "moral-only"
    if strategic is not None and present == {strategic}:
        return "game-only"
    return "other"


def latent_classes(decoder_norms: np.ndarray, nu_err: np.ndarray, models: list[str], base: str,
                   strategic: str | None, moral: list[str], presence: float = PRESENCE) -> pd.DataFrame:
    """One row per latent of decoder_norms, nu_err [n, M] (columns in `models` order): latent,
    present_in ("+"-joined names in `models` order), class, reference_model (largest decoder norm),
    relative_norm_<model> (||W_dec[j, m]|| / max_m).

    Present in m: relative norm >= presence, or nu_err[j, m] >= presence (Latent Scaling keeps a latent
    whose decoder shrank in m but which m's activations still carry). Classes, first match wins:
    "dead" (never fires: nu_err row all NaN); "shared" (present in every model); "base-only" (only
    base); "fine-tune-only" (every model but base); "moral-only" (base and strategic absent, present
    only in models of `moral`, one or several); "game-only" (only strategic); else "other".
    """
    norms, nu_err = np.asarray(decoder_norms, dtype=np.float64), np.asarray(nu_err, dtype=np.float64)
    if norms.ndim != 2 or norms.shape != nu_err.shape or norms.shape[1] != len(models):
        raise ValueError(f"latent_classes needs decoder_norms and nu_err of shape [n, {len(models)}], "
                         f"got {norms.shape} and {nu_err.shape}")
    unknown = [m for m in [base, *([strategic] if strategic is not None else []), *moral] if m not in models]
    if unknown:
        raise ValueError(f"latent_classes: model(s) {unknown} not in models {models}")
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.nan_to_num(norms / norms.max(axis=1, keepdims=True), nan=0.0)
    present = (relative >= presence) | (np.nan_to_num(nu_err, nan=-np.inf) >= presence)
    dead = np.isnan(nu_err).all(axis=1)
    names = [[m for m, p in zip(models, row) if p] for row in present]
    classes = ["dead" if dead[j] else _classify(set(n), models, base, strategic, moral) for j, n in enumerate(names)]
    out = pd.DataFrame({
        "latent": np.arange(len(norms)), "present_in": ["+".join(n) for n in names], "class": classes,
        "reference_model": [models[i] for i in np.argmax(norms, axis=1)]})
    for i, m in enumerate(models):
        out[f"relative_norm_{m}"] = relative[:, i]
    return out
