"""A scenario's context: where its prompts put the decision (pure Python, no heavy imports).

The context is the scenario's game, then its format, preprompt and action symbols where they
differ from the training prompts: "ipd" (the reference: the IPD in the training format),
"stag_hunt", "ipd/friend", "ipd/preprompt_deontological", "ipd/action3+action4". Formats outside any game
are their own context ("unrelated_pick"). Both labellings of a counterbalanced scenario share a
context (their deltas are in meaning).
"""

from __future__ import annotations

REFERENCE = "ipd"
DEFAULT_FORMAT = "table"
TRAINING_SYMBOLS = ("action1", "action2")  # prompts.DEFAULT_SYMBOLS (a test keeps them equal)


def context_of(spec: dict) -> str:
    """The context of a scenario's config entry (see the module docstring)."""
    fmt = spec.get("format") or DEFAULT_FORMAT
    if fmt.startswith("unrelated_"):
        return fmt
    parts = [spec.get("game") or REFERENCE]
    if fmt != DEFAULT_FORMAT:
        parts.append(fmt)
    if spec.get("preprompt"):
        parts.append(f"preprompt_{spec['preprompt']}")
    if spec.get("symbols") and tuple(spec["symbols"]) != TRAINING_SYMBOLS:
        parts.append("+".join(spec["symbols"]))
    return "/".join(parts)


def state_of(spec: dict) -> str:
    """The moves a scenario's prompt states, as "<own><opponent's>" with "-" for a move not shown."""
    return f"{spec.get('self_last') or '-'}{spec.get('opponent_last') or '-'}"


def scenario_states(scenarios: dict) -> dict[str, str]:
    """{scenario: state_of} of a config's scenarios."""
    return {name: state_of(spec) for name, spec in scenarios.items()}


def game_of(context: str) -> str:
    """The game of a context ("" for prompts outside any game)."""
    return "" if context.startswith("unrelated_") else context.split("/")[0]


def scenario_contexts(scenarios: dict) -> dict[str, str]:
    """{scenario: context} of a config's scenarios (swapped siblings included)."""
    return {name: context_of(spec) for name, spec in scenarios.items()}


def has_transfer(contexts: dict[str, str]) -> bool:
    """Whether the scenarios hold the reference context and at least one other."""
    found = set(contexts.values())
    return REFERENCE in found and len(found) > 1
