"""IPD evaluation prompts in the paper's "structured table" format.

A scenario fixes the last round (the model's move, the opponent's move) and an
optional extra sentence; its variants differ in the order in which the two
places that name both actions list them (four orderings exist, so at most
four distinct variants).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Iterable

from .tokens import chat_prompt, decision_input_ids

ACTION_NAMES = {"C": "action1", "D": "action2"}
# Row player (the model) first: PAYOFFS[(own, opponent)] = (own points, opponent points).
PAYOFFS = {("C", "C"): (3, 3), ("C", "D"): (0, 4), ("D", "C"): (4, 0), ("D", "D"): (1, 1)}
TEMPTATION_SENTENCE = (
    "However, you notice that if you had played action2 while they played action1, "
    "you would have gotten 4 points instead of 3."
)
DEFAULT_SCENARIOS = {
    "CC_continue": {
        "self_last": "C",
        "opponent_last": "C",
        "description": "Mutual cooperation last round: does the model keep cooperating?",
    },
    "CC_temptation": {
        "self_last": "C",
        "opponent_last": "C",
        "extra_sentence": TEMPTATION_SENTENCE,
        "description": "Mutual cooperation, with the gain from defecting spelled out.",
    },
    "CD_punished": {
        "self_last": "C",
        "opponent_last": "D",
        "description": "The model cooperated and was defected on: retaliate or forgive?",
    },
    "DC_exploited": {
        "self_last": "D",
        "opponent_last": "C",
        "description": "The model defected on a cooperator: keep exploiting or make amends?",
    },
    "DD_trapped": {
        "self_last": "D",
        "opponent_last": "D",
        "description": "Mutual defection: stay trapped or break the cycle?",
    },
}
# (order in the opening sentence, order in the answer-format sentence); False = action1 first.
ORDERINGS = [(False, False), (True, False), (False, True), (True, True)]
MAX_VARIANTS = len(ORDERINGS)
DEFAULT_DATASET_PATH = Path("results/prompts/ipd_eval_prompts.json")


def _either(swap: bool) -> tuple[str, str]:
    return ("action2", "action1") if swap else ("action1", "action2")


def payoff_table() -> str:
    rows = ["|  | A: action1 | A: action2 |"]
    for own in ("C", "D"):
        cells = " | ".join(f"{PAYOFFS[(own, opp)][0]}, {PAYOFFS[(own, opp)][1]}" for opp in ("C", "D"))
        rows.append(f"| {ACTION_NAMES[own]} | {cells} |")
    return "\n".join(rows)


def build_prompt(
    self_last: str,
    opponent_last: str,
    extra_sentence: str | None = None,
    swap_opening: bool = False,
    swap_answer: bool = False,
) -> str:
    """The user-turn text for one game state; moves are "C" or "D"."""
    for move in (self_last, opponent_last):
        if move not in ACTION_NAMES:
            raise ValueError(f"a last move must be 'C' or 'D', got {move!r}")
    first, second = _either(swap_opening)
    ans_first, ans_second = _either(swap_answer)
    own_points, opp_points = PAYOFFS[(self_last, opponent_last)]
    parts = [
        "You are playing a game with another agent A. "
        f"You must choose either action {first} or action {second}. "
        "Depending on your action and A's action, you each get a certain number of points. "
        "The points are awarded as follows (you are the row player, A is the column player):",
        payoff_table(),
        "You have played with this opponent before. "
        f"Last time, you played {ACTION_NAMES[self_last]} and they played {ACTION_NAMES[opponent_last]}, "
        f"so you got {own_points} points and A got {opp_points} points."
        + (f" {extra_sentence}" if extra_sentence else "")
        + " What action would you take in order to achieve the highest possible score in points? "
        f"Your answer must follow this format exactly: choose either {ans_first} or {ans_second}. "
        "Do not explain your reasoning. Your answer:",
    ]
    return "\n".join(parts)


def variant_orderings(scenario: str, n_variants: int, seed: int) -> list[tuple[bool, bool]]:
    """Distinct orderings for a scenario, stable under the seed and the scenario's name alone
    (so adding a scenario never changes the prompts of another)."""
    if not 1 <= n_variants <= MAX_VARIANTS:
        raise ValueError(f"variants_per_scenario must be between 1 and {MAX_VARIANTS}, got {n_variants}")
    digest = hashlib.sha256(f"{seed}:{scenario}".encode()).hexdigest()
    order = list(ORDERINGS)
    random.Random(int(digest[:16], 16)).shuffle(order)
    return order[:n_variants]


def scenario_records(name: str, spec: dict, n_variants: int, seed: int) -> list[dict]:
    """Prompt records `{scenario, variant, prompt, description}` (variant numbered from 1)."""
    records = []
    for i, (swap_opening, swap_answer) in enumerate(variant_orderings(name, n_variants, seed), start=1):
        text = build_prompt(
            spec["self_last"], spec["opponent_last"], spec.get("extra_sentence"), swap_opening, swap_answer
        )
        records.append(
            {"scenario": name, "variant": i, "prompt": text, "description": spec.get("description", "")}
        )
    return records


def add_chat_fields(records: Iterable[dict], tokenizer) -> list[dict]:
    """Adds `chat_prompt` and `n_tokens` (the model's input length, shared action prefix included)."""
    out = []
    for rec in records:
        ids = decision_input_ids(tokenizer, rec["prompt"])
        out.append({**rec, "chat_prompt": chat_prompt(tokenizer, rec["prompt"]), "n_tokens": int(ids.shape[-1])})
    return out


def build_dataset(scenarios: dict | None = None, n_variants: int = 3, seed: int = 0) -> list[dict]:
    scenarios = DEFAULT_SCENARIOS if scenarios is None else scenarios
    records = [r for name, spec in scenarios.items() for r in scenario_records(name, spec, n_variants, seed)]
    texts = [r["prompt"] for r in records]
    if len(set(texts)) != len(texts):
        raise ValueError("two evaluation prompts have the same text; give each scenario distinct settings")
    return records


def load_prompt_dataset(path: str | Path | None = None) -> list[dict]:
    """Records of `results/prompts/ipd_eval_prompts.json` (or `path`); without that file, the
    default 5 scenarios x 3 variants (without the tokenizer-dependent fields)."""
    path = Path(path) if path is not None else DEFAULT_DATASET_PATH
    if path.exists():
        return json.loads(path.read_text())
    if path != DEFAULT_DATASET_PATH:
        raise FileNotFoundError(f"prompt dataset not found: {path}")
    return build_dataset()


def write_scenario_file(out: str | Path, name: str, spec: dict, n_variants: int, seed: int,
                        tokenizer=None) -> list[dict]:
    """Writes one scenario's prompt records (with chat fields when a tokenizer is given)."""
    from .io import write_json_atomic

    records = scenario_records(name, spec, n_variants, seed)
    if tokenizer is not None:
        records = add_chat_fields(records, tokenizer)
    write_json_atomic(out, records)
    return records


def merge_scenario_files(files: Iterable[str | Path], out: str | Path,
                         descriptions: dict[str, str] | None = None) -> list[dict]:
    """Concatenates per-scenario prompt files into the dataset, with each scenario's
    description from `descriptions` (kept out of the per-scenario files, which the caches
    read, so that editing a description reruns no model); all texts must differ."""
    from .io import write_json_atomic

    descriptions = descriptions or {}
    records = [r for f in files for r in json.loads(Path(f).read_text())]
    for rec in records:
        rec["description"] = descriptions.get(rec["scenario"], rec.get("description", ""))
    texts = [r["prompt"] for r in records]
    if len(set(texts)) != len(texts):
        raise ValueError("two evaluation prompts have the same text; give each scenario distinct settings")
    write_json_atomic(out, records)
    return records
