"""Logits at the last positions of many prompts that share prefixes, each shared stretch run
once: the prompts form a token trie, and every branch point's keys and values are reused by
the prompts below it. Used by RL training (gradients flow through the shared stretches) and
by the behaviour check.

Each call reads every weight, which on a CPU costs as much as running tens of tokens
(Gemma-3-270m: 0.1 s for 5 tokens, 0.6 s for 203), so a stretch shorter than MIN_STRETCH
tokens is run as part of the tails below it instead of in a call of its own. The 30
counterbalanced evaluation prompts (5,994 tokens on Gemma-3, a trie of 1,856): splitting
once after the common prefix ran 3,642 tokens in about 11 s; this plan runs 2,504 in 15
calls, 8.4-9.3 s (every stretch its own call: 1,856 tokens in 49 calls, 12.4 s; 2-core
AMD EPYC, 2026-12-06).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Stretch:
    """Tokens [start, stop) of sequence `row`, run once on top of stretch `parent`'s keys and
    values (parent None: from position 0)."""

    parent: int | None
    row: int
    start: int
    stop: int


@dataclass(frozen=True)
class Tails:
    """Sequences `rows`, all of one length, run as one batch from position `start` on top of
    stretch `parent` (None: from position 0)."""

    parent: int | None
    start: int
    rows: list[int]


MIN_STRETCH = 16  # tokens (measured above: 32 ran the evaluation prompts no faster)


def _common_prefix_length(seqs: list[list[int]], start: int = 0) -> int:
    n = start
    while all(len(s) > n and s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n


def plan(seqs: list[list[int]], n_last: int, min_stretch: int = 1) -> tuple[list[Stretch], list[Tails]]:
    """The stretches to run (in order: a parent before its children) and the tail batches.
    A stretch stops `n_last` tokens short of its shortest sequence, so every position read
    lies in a tail. With min_stretch 1 each token of the trie is run once, except tokens
    that sequences in one tail batch share; a group whose next shared stretch is shorter
    than min_stretch runs as tails from its parent."""
    stretches: list[Stretch] = []
    tails: list[Tails] = []

    def shared_stop(idx: list[int], start: int) -> int:
        group = [seqs[i] for i in idx]
        return min(_common_prefix_length(group, start), min(len(s) for s in group) - n_last)

    def visit(idx: list[int], parent: int | None, start: int, stop: int) -> None:
        """idx share tokens [start, stop); a stretch if that is worth a call of its own."""
        if len(idx) > 1 and stop >= start + min_stretch:
            stretches.append(Stretch(parent, idx[0], start, stop))
            parent, start = len(stretches) - 1, stop
        children: dict[int, list[int]] = {}
        for i in idx:
            children.setdefault(seqs[i][start], []).append(i)
        alone: list[int] = []  # run from here: no stretch of their own to share
        for child in children.values():
            child_stop = shared_stop(child, start)
            if len(child) > 1 and child_stop >= start + min_stretch:
                visit(child, parent, start, child_stop)
            else:
                alone.extend(child)
        by_length: dict[int, list[int]] = {}
        for i in sorted(alone):
            by_length.setdefault(len(seqs[i]), []).append(i)
        tails.extend(Tails(parent, start, rows) for rows in by_length.values())

    if n_last < 1 or any(len(s) < n_last for s in seqs):
        raise ValueError(f"n_last must be >= 1 and at most every sequence's length; got {n_last}")
    everything = list(range(len(seqs)))
    visit(everything, None, 0, shared_stop(everything, 0))
    return stretches, tails


def _forward(model, ids: torch.Tensor, kv, start: int, use_cache: bool, **kwargs):
    """model on `ids` [n, t] at positions start.. on top of `kv` (per-layer (k, v) of batch 1)."""
    from transformers import DynamicCache

    n, t = ids.shape
    if kv is None:
        return model(input_ids=ids, use_cache=use_cache, **kwargs)
    cache = DynamicCache(ddp_cache_data=[(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in kv],
                         config=model.config)
    return model(input_ids=ids, use_cache=True, attention_mask=torch.ones(n, start + t, dtype=torch.long),
                 position_ids=torch.arange(start, start + t).expand(n, -1), **{_cache_arg(): cache}, **kwargs)


def _cache_arg() -> str:
    """The forward's cache keyword: `cache` where transformers' outputs have that field
    (`past_key_values` is deprecated there, removed in 5.40), `past_key_values` before."""
    from transformers.modeling_outputs import BaseModelOutputWithPast

    return "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def shared_prefix_logits(model, seqs: list[list[int]], n_last: int = 2) -> torch.Tensor:
    """`[len(seqs), n_last, vocab]` float32 logits at each sequence's last `n_last` positions,
    equal to running every sequence on its own (up to float reassociation, ~1e-5), with each
    shared stretch of the prompts' trie run once. Gradients flow through the shared keys and
    values."""
    if not seqs:
        raise ValueError("shared_prefix_logits needs at least one sequence")
    stretches, tails = plan(seqs, n_last, MIN_STRETCH)
    # Stretches need only keys and values: the decoder without the unembedding, whose weight
    # (Gemma-3: 262k x 640, 0.7 GB in float32) costs more to read than a short stretch to run.
    decoder = model.get_decoder()
    kvs: list[list] = []
    for s in stretches:
        ids = torch.tensor([seqs[s.row][s.start:s.stop]])
        out = _forward(decoder, ids, None if s.parent is None else kvs[s.parent], s.start, use_cache=True)
        kvs.append([(k, v) for k, v, *_ in _cache_of(out)])
    logits: list[torch.Tensor | None] = [None] * len(seqs)
    for tail in tails:
        ids = torch.tensor([seqs[i][tail.start:] for i in tail.rows])
        kv = None if tail.parent is None else kvs[tail.parent]
        out = _forward(model, ids, kv, tail.start, use_cache=kv is not None, logits_to_keep=n_last)
        for r, i in enumerate(tail.rows):
            logits[i] = out.logits[r].float()
    return torch.stack(logits)
