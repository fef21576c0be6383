"""The arithmetic of one attention layer that the hooked model runs in query blocks: RoPE's
half rotation, which query blocks to cut, the cached masks of the keys each block may not
see, and the soft-capped softmax. Pure functions of tensors; `hooked.py` decides what to run.
Shapes: Tq queries, Tk keys, dh head dim."""

from __future__ import annotations

import torch

from .architecture import attention_mask


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[.., dh] -> [.., dh]: (x1, x2) -> (-x2, x1), RoPE's rotation in Hugging Face's layout."""
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def query_blocks(Tn: int, T0: int, window: int | None) -> list[tuple[int, int]]:
    """Query blocks [s, e) of Tn queries after T0 earlier positions: several only where
    masked-out keys are a large share of the scores (a window much shorter than the keys, or
    long causal sequences); one block otherwise, which is what a GPU wants."""
    if window is not None and T0 + Tn > 2 * window:
        size = max(window, 32)
    elif Tn > 512:
        size = 256
    else:
        return [(0, Tn)]
    return [(s, min(s + size, Tn)) for s in range(0, Tn, size)]


class MaskCache:
    """Boolean masks [q_hi - q_lo, k_hi - k_lo], True where a query may not see a key (causal,
    and within a sliding window), cached by their bounds: a model re-runs the same blocks."""

    def __init__(self, max_entries: int = 256):
        self._masks: dict = {}
        self._max_entries = max_entries

    def get(self, q_lo: int, q_hi: int, k_lo: int, k_hi: int, window: int | None, device) -> torch.Tensor:
        key = (q_lo, q_hi, k_lo, k_hi, window, device)
        if key not in self._masks:
            if len(self._masks) > self._max_entries:
                self._masks.clear()
            q_pos = torch.arange(q_lo, q_hi, device=device)
            self._masks[key] = ~attention_mask(q_pos, torch.arange(k_lo, k_hi, device=device), window)
        return self._masks[key]


def softcapped_softmax(scores: torch.Tensor, masked_out: torch.Tensor, cap: float | None) -> torch.Tensor:
    """float32 softmax over keys of cap * tanh(scores) (`scores` [.., Tq, Tk] arrive divided by
    the cap; no cap: the scores as they are) with masked-out keys removed. In place when no
    gradient is needed: these [.., Tq, Tk] passes are most of a small model's time.
    (2 sigmoid(2x) - 1 would be faster than tanh on CPUs but loses small scores to rounding
    near 0.5.)"""
    fill = torch.finfo(scores.dtype).min
    if torch.is_grad_enabled():
        if cap is not None:
            scores = torch.tanh(scores) * cap
        scores = scores.masked_fill(masked_out, fill)
    else:
        if cap is not None:
            scores = scores.tanh_().mul_(cap)
        scores = scores.masked_fill_(masked_out, fill)
    return torch.softmax(scores, dim=-1, dtype=torch.float32)
