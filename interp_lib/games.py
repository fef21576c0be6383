"""The 2x2 matrix games a scenario can be played in (pure Python, no heavy imports).

A game has two actions. Moves are written "C" for its first action and "D" for its second in
every game, as the paper's code does (liza-tennant/LLM_morality, src/inference_vsRandom.py: the
first slot is "C", the second "D", in every PAYOFFMAT_*). In the standard labelling the first
action is the label action1 and the second action2; the swapped labelling exchanges them.

The decision metric is the same in every game: delta = logit(second action) - logit(first
action) in meaning (the labels' tokens exchanged in the swapped labelling), positive = towards
the second action. It is named for the game: P(Defect) in the games whose second action is
Defect, P(<second action>) elsewhere (Bach or Stravinsky has no Defect).

Built-in games: the five of the paper (arXiv 2410.01639), payoffs from the repository above
(PAYOFFMAT_IPD, _ISH, _ICN, _BOS, _ICD; `payoffs[own][opponent] = (own points, opponent's
points)`). The code names no actions per game; the names here are the usual game-theory
readings, chosen so that Cooperate / Defect mean what the paper's findings mean by them.
"""

from __future__ import annotations

from dataclasses import dataclass

MOVES = ("C", "D")  # first action, second action
DEFAULT_GAME = "ipd"


@dataclass(frozen=True)
class Game:
    """One game. `payoffs[(own, opponent)]` = (own points, opponent's points), moves in MOVES."""

    name: str
    title: str
    actions: tuple[str, str]  # (first action's name, second's)
    payoffs: dict

    @property
    def metric(self) -> str:
        """The decision metric's name, e.g. "P(Defect)"; P(action2) in the standard labelling."""
        return f"P({self.actions[1]})"

    @property
    def has_defect(self) -> bool:
        return self.actions == ("Cooperate", "Defect")

    def to_spec(self) -> dict:
        """The config form (what `game_from_spec` reads)."""
        return {"title": self.title, "actions": list(self.actions),
                "payoffs": [[list(self.payoffs[(own, opp)]) for opp in MOVES] for own in MOVES]}


# name -> config form; see the module docstring for the source.
BUILTIN_GAMES = {
    "ipd": {"title": "Iterated Prisoner's Dilemma", "actions": ["Cooperate", "Defect"],
            "payoffs": [[[3, 3], [0, 4]], [[4, 0], [1, 1]]]},
    "stag_hunt": {"title": "Iterated Stag Hunt", "actions": ["Cooperate", "Defect"],
                  "payoffs": [[[4, 4], [0, 3]], [[3, 0], [1, 1]]]},
    "chicken": {"title": "Iterated Chicken", "actions": ["Cooperate", "Defect"],
                "payoffs": [[[2, 2], [1, 4]], [[4, 1], [0, 0]]]},
    # Asymmetric: the row player (the model) prefers meeting on the first action, the opponent on
    # the second; neither is a defection.
    "bach_or_stravinsky": {"title": "Iterated Bach or Stravinsky", "actions": ["Bach", "Stravinsky"],
                           "payoffs": [[[3, 2], [0, 0]], [[0, 0], [2, 3]]]},
    # Coordination where mutual Defect pays most (4, 4) and mutual Cooperate least of the equilibria.
    "defective_coordination": {"title": "Iterated Defective Coordination", "actions": ["Cooperate", "Defect"],
                               "payoffs": [[[1, 1], [0, 0]], [[0, 0], [4, 4]]]},
}


class GameError(ValueError):
    """A game definition that cannot be used; the message names the key."""


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def game_from_spec(name: str, spec: dict, where: str | None = None) -> Game:
    """The Game of a config entry {title?, actions: [first, second], payoffs: 2x2 of [own, opponent]};
    GameError naming `where` (default games.<name>) and the key when it is malformed."""
    where = where or f"games.{name}"
    payoffs = spec.get("payoffs")
    shaped = (isinstance(payoffs, list) and len(payoffs) == 2
              and all(isinstance(row, list) and len(row) == 2 for row in payoffs)
              and all(isinstance(cell, list) and len(cell) == 2 and all(map(_number, cell))
                      for row in payoffs for cell in row))
    if not shaped:
        raise GameError(f"{where}.payoffs: expected 2 rows (your action) of 2 cells (the opponent's action), "
                        f"each [your points, the opponent's points]; got {payoffs!r}")
    actions = spec.get("actions")
    if not (isinstance(actions, list) and len(actions) == 2 and all(isinstance(a, str) and a.strip() for a in actions)
            and actions[0] != actions[1]):
        raise GameError(f"{where}.actions: expected two distinct names [first action, second action]; got {actions!r}")
    table = {(own, opp): tuple(payoffs[i][j]) for i, own in enumerate(MOVES) for j, opp in enumerate(MOVES)}
    return Game(name=name, title=spec.get("title") or name, actions=(actions[0], actions[1]), payoffs=table)


def configured_games(config_games: dict | None = None) -> dict[str, Game]:
    """The built-in games, then the config's `games` (a config entry of a built-in's name replaces it)."""
    specs = {**BUILTIN_GAMES, **(config_games or {})}
    return {name: game_from_spec(name, spec) for name, spec in specs.items()}


def get_game(game: Game | dict | str | None) -> Game:
    """A scenario's game: a Game as it is, a resolved config entry (its config form with its
    `name`, what the workflow passes), a built-in's name, or None for the IPD."""
    if isinstance(game, Game):
        return game
    if not game:
        game = DEFAULT_GAME
    if isinstance(game, str):
        if game not in BUILTIN_GAMES:
            raise GameError(f"unknown game {game!r} (built in: {', '.join(BUILTIN_GAMES)})")
        return game_from_spec(game, BUILTIN_GAMES[game])
    return game_from_spec(game["name"], game)


IPD = get_game(None)
