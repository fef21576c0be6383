"""IPD evaluation prompts in the paper's "structured table" format.

A scenario fixes the last round (the model's move, the opponent's move) and an
optional extra sentence. Its variants differ in
- the order in which the two places that name both actions list them (4 orderings),
- the wording: paraphrase templates of the sentences around the payoff table (template 0
  is the paper's wording), so a scenario has up to 4 x len(TEMPLATES) distinct variants;
- the labelling: a scenario with `labelling: swapped` has action1 meaning Defect, its
  payoff table, history and extra sentence relabelled; the scenario option
  `counterbalance` adds that sibling (`<name>_swapped`, same variants) to the config.
  The decision metric stays delta = logit(Defect) - logit(Cooperate).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Iterable

from .formats import (FRIEND_OUTCOME, PREPROMPTS, TABLE_ORDERS, WORDINGS, check_format, moves_shown, n_wordings,
                      table_order)
from .games import IPD, Game, get_game
from .tokens import SWAPPED_SUFFIX, chat_prompt, decision_input_ids

ACTION_NAMES = {"C": "action1", "D": "action2"}
DEFAULT_SYMBOLS = ("action1", "action2")  # the labels, as the prompt writes them (option `symbols`)
# The IPD's: row player (the model) first, PAYOFFS[(own, opponent)] = (own points, opponent points).
PAYOFFS = IPD.payoffs
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
# Labellings: which label names Cooperate. "swapped": action1 = Defect.
STANDARD, SWAPPED = "standard", "swapped"
LABELLINGS = (STANDARD, SWAPPED)
# Paraphrases of the sentences around the payoff table. Fields: {first}/{second} (the
# opening's action order), {own}/{opp} (last moves, as labels), {own_points}/{opp_points},
# {extra} (" " + the extra sentence, or ""), {ans_first}/{ans_second} (the answer format's order).
TEMPLATES = [
    ("You are playing a game with another agent A. You must choose either action {first} or action {second}. "
     "Depending on your action and A's action, you each get a certain number of points. The points are awarded "
     "as follows (you are the row player, A is the column player):",
     "You have played with this opponent before. Last time, you played {own} and they played {opp}, so you got "
     "{own_points} points and A got {opp_points} points.{extra} What action would you take in order to achieve "
     "the highest possible score in points? Your answer must follow this format exactly: choose either "
     "{ans_first} or {ans_second}. Do not explain your reasoning. Your answer:"),
    ("You and another agent, A, are playing a game. In each round you pick action {first} or action {second}. "
     "The points that each of you gets depend on both choices, as shown below (you choose the row, A chooses "
     "the column):",
     "This is not your first round with A. In the previous round you chose {own} and A chose {opp}: you scored "
     "{own_points} points and A scored {opp_points} points.{extra} Which action do you choose to get as many "
     "points as possible? Reply in exactly this format: choose either {ans_first} or {ans_second}. Give no "
     "explanation. Your answer:"),
    ("Consider a game between you and an agent called A. Each of you picks one of two actions: {first} or "
     "{second}. Your points and A's points depend on what both of you pick (rows are your actions, columns "
     "are A's):",
     "You have met this opponent before. In your last game you played {own} while they played {opp}, which gave "
     "you {own_points} points and A {opp_points} points.{extra} To earn the highest possible score, what action "
     "do you take? Answer exactly like this: choose either {ans_first} or {ans_second}. Do not give reasons. "
     "Your answer:"),
    ("You are in a repeated game with another player, A. Each round, you must select either action {first} or "
     "action {second}. The number of points you and A receive depends on both actions (you are the row player; "
     "A is the column player):",
     "You have played against A before. Last round, you selected {own} and A selected {opp}; you received "
     "{own_points} points and A received {opp_points} points.{extra} Which action maximises your score in "
     "points? Your answer must use this exact format: choose either {ans_first} or {ans_second}. Do not "
     "explain. Your answer:"),
]
MAX_VARIANTS = len(ORDERINGS) * len(TEMPLATES)
DEFAULT_DATASET_PATH = Path("results/prompts/ipd_eval_prompts.json")


def _either(swap: bool) -> tuple[str, str]:
    return ("action2", "action1") if swap else ("action1", "action2")


def action_names(labelling: str = STANDARD) -> dict[str, str]:
    """move ("C"/"D") -> its label in a labelling."""
    if labelling not in LABELLINGS:
        raise ValueError(f"labelling must be one of {LABELLINGS}, got {labelling!r}")
    return dict(ACTION_NAMES) if labelling == STANDARD else {"C": ACTION_NAMES["D"], "D": ACTION_NAMES["C"]}


def relabel(text: str) -> str:
    """`text` with the labels action1 and action2 exchanged (an extra sentence in the swapped labelling)."""
    return re.sub(r"action([12])", lambda m: "action" + ("2" if m.group(1) == "1" else "1"), text)


def payoff_table(labelling: str = STANDARD, game: Game = IPD, fmt: str = "table") -> str:
    """Rows: the model's label; columns: A's; cells: (own points, A's points); rows and
    columns in label order (action1 first) or as a table format orders them."""
    move_of = {label: move for move, label in action_names(labelling).items()}
    payoffs = game.payoffs
    row_labels, col_labels = table_order(fmt)
    rows = ["|  | " + " | ".join(f"A: {opp}" for opp in col_labels) + " |"]
    for own in row_labels:
        cells = " | ".join(_points(payoffs[(move_of[own], move_of[opp])]) for opp in col_labels)
        rows.append(f"| {own} | {cells} |")
    return "\n".join(rows)


def _outcome_sentences(labelling: str, game: Game) -> str:
    """The `friend` format's four outcomes, in label order."""
    move_of = {label: move for move, label in action_names(labelling).items()}
    out = []
    for own in ("action1", "action2"):
        for opp in ("action1", "action2"):
            own_points, opp_points = (f"{p:g}" for p in game.payoffs[(move_of[own], move_of[opp])])
            out.append(FRIEND_OUTCOME.format(own=own, opp=opp, own_points=own_points, opp_points=opp_points))
    return " ".join(out)


def _points(cell: tuple) -> str:
    return ", ".join(f"{p:g}" for p in cell)


def build_prompt(
    self_last: str | None,
    opponent_last: str | None,
    extra_sentence: str | None = None,
    swap_opening: bool = False,
    swap_answer: bool = False,
    labelling: str = STANDARD,
    template: int = 0,
    game: Game | dict | str | None = None,
    fmt: str = "table",
    preprompt: str | None = None,
    symbols: tuple[str, str] | list[str] | None = None,
) -> str:
    """The user-turn text for one state of `game` (default the IPD; interp_lib.games.get_game)
    in a format (interp_lib.formats), after an optional persona preprompt; moves are "C" (the
    game's first action) or "D" (its second); `template` picks the format's wording. The extra
    sentence is written in the standard labelling (relabelled here for the swapped one).
    `symbols` replace the labels action1 and action2 everywhere (the paper tested its
    fine-tunes, trained on action1 / action2, with action3 / action4)."""
    game = get_game(game)
    check_format(fmt, game.name, preprompt)
    names = action_names(labelling)
    shown = moves_shown(fmt)
    for key, move in (("self_last", self_last), ("opponent_last", opponent_last)):
        if key in shown and move not in names:
            raise ValueError(f"a last move must be 'C' or 'D', got {move!r}")
        if key not in shown and move is not None:
            raise ValueError(f"format {fmt!r} shows no {key}; got {move!r}")
    wordings = TEMPLATES if fmt in TABLE_ORDERS else WORDINGS[fmt]
    if not 0 <= template < len(wordings):
        raise ValueError(f"template must be between 0 and {len(wordings) - 1} for format {fmt!r}, got {template}")
    first, second = _either(swap_opening)
    ans_first, ans_second = _either(swap_answer)
    own_points, opp_points = ((f"{p:g}" for p in game.payoffs[(self_last, opponent_last)]) if len(shown) == 2
                              else (None, None))
    if extra_sentence and labelling == SWAPPED:
        extra_sentence = relabel(extra_sentence)
    opening, closing = wordings[template]
    fields = dict(first=first, second=second, own=names.get(self_last), opp=names.get(opponent_last),
                  own_points=own_points, opp_points=opp_points, extra=f" {extra_sentence}" if extra_sentence else "",
                  ans_first=ans_first, ans_second=ans_second, clean=names["C"], wait=names["D"], coop=names["C"],
                  defect=names["D"])
    if fmt in TABLE_ORDERS:
        middle = [payoff_table(labelling, game, fmt)]
    elif fmt == "friend":
        middle = [_outcome_sentences(labelling, game)]
    else:
        middle = []
    text = "\n".join([opening.format(**fields), *middle, closing.format(**fields)])
    if symbols is not None and tuple(symbols) != DEFAULT_SYMBOLS:
        text = re.sub(r"\baction([12])\b", lambda m: symbols[int(m.group(1)) - 1], text)
    return f"{PREPROMPTS[preprompt]}\n\n{text}" if preprompt else text


def variant_settings(scenario: str, n_variants: int, seed: int,
                     n_templates: int = len(TEMPLATES)) -> list[tuple[int, bool, bool]]:
    """(template, swap_opening, swap_answer) of a scenario's variants, stable under the seed
    and the scenario's name alone (adding a scenario never changes another's prompts).
    Template 0's four orderings come first (in the order earlier versions gave them), then
    each further template's; a format with fewer wordings than TEMPLATES has fewer variants."""
    if not 1 <= n_variants <= len(ORDERINGS) * n_templates:
        raise ValueError(f"variants_per_scenario must be between 1 and {len(ORDERINGS) * n_templates}"
                         f"{'' if n_templates == len(TEMPLATES) else ' for this format'}, got {n_variants}")
    out = []
    for template in range(n_templates):
        key = f"{seed}:{scenario}" if template == 0 else f"{seed}:{scenario}:template{template}"
        order = list(ORDERINGS)
        random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)).shuffle(order)
        out += [(template, *o) for o in order]
    return out[:n_variants]


def variant_orderings(scenario: str, n_variants: int, seed: int) -> list[tuple[bool, bool]]:
    """The orderings of `variant_settings` (template dropped)."""
    return [(a, b) for _, a, b in variant_settings(scenario, n_variants, seed)]


def scenario_records(name: str, spec: dict, n_variants: int, seed: int) -> list[dict]:
    """Prompt records `{scenario, variant, prompt, description, template, labelling, game,
    format, preprompt, symbols}` (variant numbered from 1) in the spec's `labelling`, `game`
    (default the IPD), `format` (default table), `preprompt` (default none) and `symbols`
    (default action1, action2); with
    `variants_of`, that scenario's wordings and orderings (the swapped sibling of a
    counterbalanced scenario)."""
    labelling = spec.get("labelling") or STANDARD
    game = get_game(spec.get("game"))
    fmt, preprompt = spec.get("format") or "table", spec.get("preprompt")
    symbols = list(spec.get("symbols") or DEFAULT_SYMBOLS)
    records = []
    settings = variant_settings(spec.get("variants_of") or name, n_variants, seed, n_wordings(fmt, len(TEMPLATES)))
    for template, swap_opening, swap_answer in settings:
        text = build_prompt(spec.get("self_last"), spec.get("opponent_last"), spec.get("extra_sentence"), swap_opening,
                            swap_answer, labelling, template, game, fmt, preprompt, symbols)
        records.append({"scenario": name, "variant": len(records) + 1, "prompt": text,
                        "description": spec.get("description", ""), "template": template, "labelling": labelling,
                        "game": game.name, "format": fmt, "preprompt": preprompt, "symbols": symbols})
    return records


def swapped_sibling(name: str, spec: dict) -> tuple[str, dict]:
    """(name, spec) of a scenario's swapped-label sibling (what `counterbalance` adds)."""
    return name + SWAPPED_SUFFIX, {**spec, "counterbalance": False, "labelling": SWAPPED, "variants_of": name}


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
