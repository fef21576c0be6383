"""A prompt variant's cache group collected from a hooked model (one forward pass with the
hooks), and the file's attributes and /unembed arrays read from the model: the one part of
the cache that runs a model (torch is imported inside the functions). Layout: storage.py."""

from __future__ import annotations

import math

import numpy as np

from .storage import FORMAT_VERSION, STACKED, NonFiniteActivation


def collect_variant(hooked, input_ids, action_tokens: dict, label: str = "") -> dict:
    """Runs one prompt ([1, T] ids) and returns the arrays and attrs of its cache group."""
    import torch

    with torch.no_grad():
        return _collect_variant(hooked, input_ids, action_tokens, label)


def _collect_variant(hooked, input_ids, action_tokens, label):
    import torch

    from ..model.hooked import rms_scale

    logits, cache = hooked.run_with_cache(input_ids, last_only=True, patterns=True)  # [1, V] float32 readout
    cfg, pos = hooked.cfg, input_ids.shape[-1] - 1
    _check_all_finite({**cache, "logits": logits[0]}, hooked.name, label)
    arrays: dict[str, np.ndarray] = {}
    for key, hook in STACKED.items():
        names = [f"blocks.{l}.{hook}" for l in range(cfg.n_layers)]
        if names[0] not in cache:  # post-norm scales exist for Gemma-2 only
            continue
        stacked = torch.stack([cache[n][0] for n in names]).float()
        arrays[key] = (stacked.squeeze(-1) if key.endswith("scale") else stacked).cpu().numpy()
    arrays["embed"] = cache["hook_embed"][0].float().cpu().numpy()
    # The readout ran at the decision position only; the final norm's scale at every position
    # is the same function of the last block's output.
    resid_last = cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"][0]
    arrays["ln_final_scale"] = rms_scale(resid_last, cfg.eps)[:, 0].cpu().numpy()
    arrays["head_out_decision"] = torch.stack(
        [hooked.head_contributions(cache, l, pos)[0] for l in range(cfg.n_layers)]
    ).cpu().numpy()
    arrays["decision_logits"] = logits[0].cpu().numpy()
    arrays["attn_decision"] = torch.stack(
        [cache[f"blocks.{l}.attn.hook_pattern"][0, :, pos] for l in range(cfg.n_layers)]
    ).float().cpu().numpy()
    arrays["input_ids"] = input_ids[0].cpu().numpy().astype(np.int64)
    C, D = action_tokens["C"], action_tokens["D"]
    pre = hooked.unembed(resid_last[None, pos], rows=[C, D], apply_softcap=False)
    delta = float(logits[0, D] - logits[0, C])
    attrs = {
        "decision_position": pos,
        "delta": delta,
        "delta_pre_softcap": float(pre[0, 1] - pre[0, 0]),
        "p_action2": 1.0 / (1.0 + math.exp(-delta)),
    }
    return {"arrays": arrays, "attrs": attrs}


def _check_finite(t, model: str, label: str, name: str) -> None:
    if not t.isfinite().all():
        raise NonFiniteActivation(f"model {model}, prompt {label}: NaN or Inf in {name}")


def _check_all_finite(tensors: dict, model: str, label: str) -> None:
    """Raises NonFiniteActivation naming the first of `tensors` (in the order the hooks ran: the
    first bad layer) that holds a NaN or Inf. A sum is NaN or Inf when any term is, so one
    reduction per tensor and one host sync settle the usual case (isfinite().all() per tensor
    was 8x slower on a CPU, and a sync each on a GPU); only then, or when a sum of finite values
    overflowed, is each tensor checked element by element."""
    import torch

    if not tensors:
        return
    sums = torch.stack([t.sum(dtype=torch.float32) for t in tensors.values()])
    if bool(sums.isfinite().all()):
        return
    for name, value in tensors.items():
        _check_finite(value, model, label, name)


def file_attrs(hooked, model_name: str, scenario: str, fingerprint: str, tokenizer_hash: str,
               action_tokens: dict) -> dict:
    cfg = hooked.cfg
    nan = float("nan")
    return {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "scenario": scenario,
        "fingerprint": fingerprint,
        "tokenizer_hash": tokenizer_hash,
        "dtype": str(hooked.dtype).replace("torch.", ""),
        "precision": hooked.precision.name,
        "family": cfg.family,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "d_head": cfg.d_head,
        "d_model": cfg.d_model,
        "d_vocab": cfg.d_vocab,
        "eps": cfg.eps,
        "norm_offset": cfg.norm_offset,
        "attn_softcap": cfg.attn_softcap if cfg.attn_softcap is not None else nan,
        "final_softcap": cfg.final_softcap if cfg.final_softcap is not None else nan,
        "token_C": action_tokens["C"],
        "token_D": action_tokens["D"],
        "prefix": np.asarray(action_tokens["prefix"], dtype=np.int64),
    }


def unembed_arrays(hooked, action_tokens: dict) -> dict:
    """The file's /unembed group: W_U_actions [2, d] (the C and D rows, float32) and
    ln_final_gain [d]."""
    import torch

    with torch.no_grad():
        return {"W_U_actions": hooked.W_U[[action_tokens["C"], action_tokens["D"]]].float().cpu().numpy(),
                "ln_final_gain": hooked.final_norm_gain().float().cpu().numpy()}
