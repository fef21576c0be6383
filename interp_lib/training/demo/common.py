"""Shared pieces of the embedded model family: game states, their encoded prompts, the
training-state distribution, thread settings, atomic output directories, and evaluation."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from ... import prompts
from ...tokens import decision_input_ids, get_action_token_ids

logger = logging.getLogger("interp_lib.training.demo")

# Threads for every training loop. Fixed (not os.cpu_count()) so that results do not depend on
# the machine; one thread is nearly as fast as two for a model this small, and lets jobs run
# side by side without oversubscribing the cores. INTERP_DEMO_THREADS overrides it.
DEFAULT_THREADS = 1
TEMPTATION_PROB = 0.5


@dataclass(frozen=True)
class GameState:
    """One training/evaluation prompt: the last round, the temptation sentence, the orderings."""

    own_last: str
    opponent_last: str
    temptation: bool
    swap_opening: bool
    swap_answer: bool
    labelling: str = prompts.STANDARD  # "swapped": action1 = Defect

    @property
    def prompt(self) -> str:
        extra = prompts.TEMPTATION_SENTENCE if self.temptation else None
        return prompts.build_prompt(
            self.own_last, self.opponent_last, extra, self.swap_opening, self.swap_answer, self.labelling
        )

    @property
    def situation(self) -> str:
        """`CC`, `CC+T` (with the temptation sentence), `CD`, `DC` or `DD`."""
        return self.own_last + self.opponent_last + ("+T" if self.temptation else "")


def all_states(labellings: tuple[str, ...] = (prompts.STANDARD,)) -> list[GameState]:
    """Every state of the training distribution (20 per labelling), in a fixed order."""
    out = []
    for labelling in labellings:
        for own in "CD":
            for opp in "CD":
                for tempt in (False, True) if (own, opp) == ("C", "C") else (False,):
                    for swap_opening, swap_answer in prompts.ORDERINGS:
                        out.append(GameState(own, opp, tempt, swap_opening, swap_answer, labelling))
    return out


def sample_state(rng: random.Random) -> GameState:
    """Both last moves uniform, both orderings uniform and independent, the temptation
    sentence with probability TEMPTATION_PROB when the last round was (C, C)."""
    own, opp = rng.choice("CD"), rng.choice("CD")
    swap_opening, swap_answer = rng.random() < 0.5, rng.random() < 0.5
    tempt = (own, opp) == ("C", "C") and rng.random() < TEMPTATION_PROB
    return GameState(own, opp, tempt, swap_opening, swap_answer)


class PromptCache:
    """Decision input ids (chat template + prompt + the actions' shared prefix) per state."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.actions = get_action_token_ids(tokenizer)
        self.end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
        self._ids: dict[GameState, list[int]] = {}

    def decision_ids(self, state: GameState) -> list[int]:
        if state not in self._ids:
            self._ids[state] = decision_input_ids(self.tokenizer, state.prompt, self.actions)[0].tolist()
        return self._ids[state]


def group_by_length(seqs: list[list[int]]) -> dict[int, list[int]]:
    """Indices of `seqs` grouped by length (so no padding is ever needed)."""
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        groups.setdefault(len(s), []).append(i)
    return groups


@contextlib.contextmanager
def torch_threads(n: int | None = None):
    n = n or int(os.environ.get("INTERP_DEMO_THREADS", DEFAULT_THREADS))
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


def seed_everything(seed: int) -> random.Random:
    torch.manual_seed(seed)
    return random.Random(seed)


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | Path):
    """Yields a fresh sibling temp dir; on success it replaces `out_dir`, on failure it is removed.
    A killed job leaves at most a hidden `.<name>.tmp-*` dir, never a complete-looking out_dir."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@torch.no_grad()
def decision_deltas(model, cache: PromptCache, states: list[GameState]) -> list[float]:
    """delta = logit[D] - logit[C] (after the final softcap) at the decision position."""
    seqs = [cache.decision_ids(s) for s in states]
    out = [0.0] * len(states)
    for _, idx in group_by_length(seqs).items():
        ids = torch.tensor([seqs[i] for i in idx])
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]
        delta = logits[:, cache.actions["D"]] - logits[:, cache.actions["C"]]
        for j, i in enumerate(idx):
            out[i] = float(delta[j])
    return out


def p_action2_by_situation(model, cache: PromptCache) -> dict[str, float]:
    """Mean over the orderings of p(action2) = sigmoid(delta), per situation (CC, CC+T, CD, DC, DD)."""
    states = all_states()
    deltas = decision_deltas(model, cache, states)
    acc: dict[str, list[float]] = {}
    for s, d in zip(states, deltas):
        acc.setdefault(s.situation, []).append(float(torch.sigmoid(torch.tensor(d))))
    return {k: round(sum(v) / len(v), 4) for k, v in acc.items()}
