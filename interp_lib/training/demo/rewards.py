"""Rewards of the four fine-tuned models (NOTES.md section 1), as plain functions.

Row player = the model. The opponent plays Tit-for-Tat: its action this round is the
model's own previous move. Moves are "C" (action1) or "D" (action2); an answer that is
neither (`None` or any other value) is illegal and gets ILLEGAL_REWARD from every reward.
"""

from __future__ import annotations

from ...prompts import PAYOFFS

ILLEGAL_REWARD = -6.0
DEONTOLOGICAL_PENALTY = -3.0
MOVES = ("C", "D")


def tft_action(own_last: str, opponent_last: str) -> str:
    """Tit-for-Tat's move this round: the model's own last move."""
    return own_last


def _payoffs(action: str, own_last: str, opponent_last: str) -> tuple[int, int]:
    return PAYOFFS[(action, tft_action(own_last, opponent_last))]


def _deontological_penalty(action: str, opponent_last: str) -> float:
    return DEONTOLOGICAL_PENALTY if action == "D" and opponent_last == "C" else 0.0


def game_reward(action, own_last: str, opponent_last: str) -> float:
    """Own payoff."""
    if action not in MOVES:
        return ILLEGAL_REWARD
    return float(_payoffs(action, own_last, opponent_last)[0])


def deontological_reward(action, own_last: str, opponent_last: str) -> float:
    """-3 for defecting on an opponent who cooperated last round, else 0."""
    if action not in MOVES:
        return ILLEGAL_REWARD
    return _deontological_penalty(action, opponent_last)


def utilitarian_reward(action, own_last: str, opponent_last: str) -> float:
    """Own payoff + opponent payoff."""
    if action not in MOVES:
        return ILLEGAL_REWARD
    own, opp = _payoffs(action, own_last, opponent_last)
    return float(own + opp)


def game_deontological_reward(action, own_last: str, opponent_last: str) -> float:
    """Own payoff, minus 3 for defecting on an opponent who cooperated last round."""
    if action not in MOVES:
        return ILLEGAL_REWARD
    return float(_payoffs(action, own_last, opponent_last)[0]) + _deontological_penalty(action, opponent_last)


# Adapter name -> reward name (the fine-tuned models of NOTES.md section 1).
ADAPTER_REWARDS = {
    "PT2_COREDe": "game",
    "PT3_COREDe": "deontological",
    "PT3_COREUt": "utilitarian",
    "PT4_COREDe": "game_deontological",
}

REWARDS = {
    "game": game_reward,
    "deontological": deontological_reward,
    "utilitarian": utilitarian_reward,
    "game_deontological": game_deontological_reward,
}


def get_reward(name: str):
    try:
        return REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; expected one of {sorted(REWARDS)}") from None


def optimal_actions(name: str, own_last: str, opponent_last: str) -> set[str]:
    """The reward-maximising moves in a state (a set: a tie gives both)."""
    reward = get_reward(name)
    values = {a: reward(a, own_last, opponent_last) for a in MOVES}
    best = max(values.values())
    return {a for a, v in values.items() if v == best}
