"""Games (issue 28 item 1): the built-in payoffs against the cited table, every game's payoff
table and history in both labellings read back from the prompt, games in the config and their
one-line errors, and what a scenario's prompts depend on."""

import copy
import re

import pytest
import yaml

from conftest import REPO
from test_config import check  # a one-line ConfigError of config.yaml changed by a function
from interp_lib import prompts as P
from interp_lib.config import scenario_game, validate_config
from interp_lib.games import BUILTIN_GAMES, GameError, game_from_spec, get_game

# liza-tennant/LLM_morality, src/inference_vsRandom.py (commit 075a5f69), PAYOFFMAT_IPD, _ISH,
# _ICN, _BOS and _ICD: PAYOFFMAT[model's action][opponent's action] = (model's points,
# opponent's points), the first action "C", the second "D". Typed from the source, not from
# interp_lib.
PAPER = {
    "ipd": {("C", "C"): (3, 3), ("C", "D"): (0, 4), ("D", "C"): (4, 0), ("D", "D"): (1, 1)},
    "stag_hunt": {("C", "C"): (4, 4), ("C", "D"): (0, 3), ("D", "C"): (3, 0), ("D", "D"): (1, 1)},
    "chicken": {("C", "C"): (2, 2), ("C", "D"): (1, 4), ("D", "C"): (4, 1), ("D", "D"): (0, 0)},
    "bach_or_stravinsky": {("C", "C"): (3, 2), ("C", "D"): (0, 0), ("D", "C"): (0, 0), ("D", "D"): (2, 3)},
    "defective_coordination": {("C", "C"): (1, 1), ("C", "D"): (0, 0), ("D", "C"): (0, 0), ("D", "D"): (4, 4)},
}
RAW = yaml.safe_load((REPO / "config.yaml").read_text())


def test_the_builtin_games_are_the_papers():
    assert set(BUILTIN_GAMES) == set(PAPER)
    for name, payoffs in PAPER.items():
        assert get_game(name).payoffs == payoffs, name
    assert get_game(None).payoffs == PAPER["ipd"] == P.PAYOFFS


def test_metric_names_follow_the_game():
    assert get_game("ipd").metric == "P(Defect)" and get_game("ipd").has_defect
    assert get_game("bach_or_stravinsky").metric == "P(Stravinsky)"
    assert not get_game("bach_or_stravinsky").has_defect


def read_table(text: str) -> dict:
    """(row label, column label) -> (row points, column points), as a reader sees the table."""
    rows = re.findall(r"^\| (action[12]) \| ([\d.]+), ([\d.]+) \| ([\d.]+), ([\d.]+) \|$", text, flags=re.M)
    assert len(rows) == 2
    return {(own, opp): (float(a), float(b)) for own, *cells in rows
            for opp, a, b in (("action1", cells[0], cells[1]), ("action2", cells[2], cells[3]))}


@pytest.mark.parametrize("game", list(PAPER))
@pytest.mark.parametrize("labelling", P.LABELLINGS)
def test_every_games_table_and_history_read_back_in_both_labellings(game, labelling):
    label_of = {"C": "action1", "D": "action2"} if labelling == "standard" else {"C": "action2", "D": "action1"}
    for (own, opp), points in PAPER[game].items():
        text = P.build_prompt(own, opp, None, False, True, labelling, 1, game)
        table = read_table(text)
        for (a, b), cell in PAPER[game].items():
            assert table[(label_of[a], label_of[b])] == cell
        history = text.split("\n")[-1]
        assert f"you chose {label_of[own]} and A chose {label_of[opp]}" in history
        assert f"you scored {points[0]} points and A scored {points[1]} points" in history


def test_ipd_prompts_are_unchanged_by_games():
    """Template 0 of the IPD, every ordering: the text the project has always written."""
    text = P.build_prompt("C", "D", game="ipd")
    assert text == P.build_prompt("C", "D")
    assert "| action1 | 3, 3 | 0, 4 |\n| action2 | 4, 0 | 1, 1 |" in text


def test_a_counterbalanced_stag_hunt_scenario_keeps_its_game():
    cfg = copy.deepcopy(RAW)
    cfg["scenarios"]["SH_punished"] = {"self_last": "C", "opponent_last": "D", "game": "stag_hunt",
                                       "counterbalance": True}
    validate_config(cfg)
    sibling = cfg["scenarios"]["SH_punished_swapped"]
    assert sibling["game"] == "stag_hunt" and sibling["labelling"] == "swapped"
    assert scenario_game(cfg, "SH_punished_swapped") == {"name": "stag_hunt", **BUILTIN_GAMES["stag_hunt"]}
    records = P.scenario_records("SH_punished_swapped", {**sibling, "game": scenario_game(cfg, "SH_punished")}, 2, 0)
    assert {r["game"] for r in records} == {"stag_hunt"}
    assert read_table(records[0]["prompt"])[("action2", "action2")] == (4.0, 4.0)  # Stag is action2 here


def test_a_config_game_is_used_and_may_replace_a_builtin():
    cfg = copy.deepcopy(RAW)
    cfg["games"] = {"ipd": {"actions": ["Cooperate", "Defect"], "payoffs": [[[5, 5], [0, 7]], [[7, 0], [1, 1]]]},
                    "harmony": {"title": "Harmony", "actions": ["Cooperate", "Defect"],
                                "payoffs": [[[4, 4], [3, 2]], [[2, 3], [1, 1]]]}}
    cfg["scenarios"]["H_cc"] = {"self_last": "C", "opponent_last": "C", "game": "harmony"}
    validate_config(cfg)
    assert scenario_game(cfg, "CC_continue")["payoffs"][0][0] == [5, 5]
    text = P.build_prompt("C", "C", game=scenario_game(cfg, "H_cc"))
    assert read_table(text)[("action1", "action2")] == (3.0, 2.0)


@pytest.mark.parametrize("payoffs", [
    [[3, 3], [0, 4]],  # one player's 2x2 only
    [[[3, 3], [0, 4]], [[4, 0], [1, 1]], [[1, 1], [1, 1]]],  # three rows
    [[[3, 3], [0, 4]], [[4, 0], [1]]],  # a cell without the opponent's points
    [[[3, 3], [0, 4]], [[4, 0], [1, "one"]]],  # not a number
])
def test_a_payoff_matrix_of_the_wrong_shape_is_named(payoffs):
    msg = check(lambda c: c.update(games={"g": {"actions": ["A", "B"], "payoffs": payoffs}}))
    assert msg.startswith("config: games.g.payoffs: expected 2 rows (your action) of 2 cells"), msg


def test_unknown_game_and_bad_actions_are_named():
    msg = check(lambda c: c["scenarios"]["CC_continue"].update(game="go"))
    assert msg.startswith("config: scenarios.CC_continue.game: unknown game 'go' (known: ipd, stag_hunt,"), msg
    msg = check(lambda c: c.update(games={"g": {"actions": ["A", "A"], "payoffs": [[[1, 1], [0, 0]], [[0, 0], [1, 1]]]}}))
    assert msg.startswith("config: games.g.actions: expected two distinct names"), msg
    msg = check(lambda c: c.update(games={"g": {"payoffs": [[[1, 1], [0, 0]], [[0, 0], [1, 1]]]}}))
    assert "games.g" in msg and "actions" in msg, msg
    with pytest.raises(GameError, match="unknown game 'go'"):
        get_game("go")


def test_game_from_spec_round_trips():
    for name, spec in BUILTIN_GAMES.items():
        assert game_from_spec(name, get_game(name).to_spec()) == get_game(name)


# Formats (interp_lib/formats.py): what a reader learns from each.

def read_any_table(text: str) -> tuple[list[str], list[str], dict]:
    """(row labels top to bottom, column labels left to right, cells) of a payoff table in any order."""
    header = re.search(r"^\|  \| A: (action[12]) \| A: (action[12]) \|$", text, flags=re.M)
    cols = list(header.groups())
    rows = re.findall(r"^\| (action[12]) \| ([\d.]+), ([\d.]+) \| ([\d.]+), ([\d.]+) \|$", text, flags=re.M)
    cells = {(own, col): (float(v[2 * i]), float(v[2 * i + 1])) for own, *v in rows for i, col in enumerate(cols)}
    return [r[0] for r in rows], cols, cells


@pytest.mark.parametrize("fmt, rows, cols", [
    ("table", ["action1", "action2"], ["action1", "action2"]),
    ("table_reversed", ["action2", "action1"], ["action2", "action1"]),
    ("table_columns_swapped", ["action1", "action2"], ["action2", "action1"]),
    ("table_rows_swapped", ["action2", "action1"], ["action1", "action2"]),
])
@pytest.mark.parametrize("labelling", P.LABELLINGS)
def test_table_orders_keep_every_cell_right(fmt, rows, cols, labelling):
    label_of = {"C": "action1", "D": "action2"} if labelling == "standard" else {"C": "action2", "D": "action1"}
    text = P.build_prompt("D", "C", None, False, False, labelling, 2, "chicken", fmt)
    got_rows, got_cols, cells = read_any_table(text)
    assert (got_rows, got_cols) == (rows, cols)
    for (a, b), cell in PAPER["chicken"].items():
        assert cells[(label_of[a], label_of[b])] == cell
    assert P.build_prompt("D", "C", None, False, False, labelling, 2, "chicken") == text.replace(
        P.payoff_table(labelling, get_game("chicken"), fmt), P.payoff_table(labelling, get_game("chicken")))


@pytest.mark.parametrize("labelling", P.LABELLINGS)
def test_the_friend_format_states_every_outcome_in_sentences(labelling):
    label_of = {"C": "action1", "D": "action2"} if labelling == "standard" else {"C": "action2", "D": "action1"}
    text = P.build_prompt("C", "D", None, True, True, labelling, 1, "stag_hunt", "friend")
    assert "|" not in text and "friend" in text
    said = {(a, b): (float(x), float(y)) for a, b, x, y in re.findall(
        r"If you pick (action[12]) and your friend picks (action[12]), you get ([\d.]+) points and your friend "
        r"gets ([\d.]+)\.", text)}
    assert len(said) == 4
    for (a, b), cell in PAPER["stag_hunt"].items():
        assert said[(label_of[a], label_of[b])] == cell
    assert f"you chose {label_of['C']} and your friend chose {label_of['D']}: you earned 0 points" in text


@pytest.mark.parametrize("labelling", P.LABELLINGS)
def test_story_and_explicit_name_the_moves_without_numbers(labelling):
    label_of = {"C": "action1", "D": "action2"} if labelling == "standard" else {"C": "action2", "D": "action1"}
    story = P.build_prompt("D", "C", None, False, False, labelling, 0, "ipd", "story")
    assert f"{label_of['C']} means you clean; {label_of['D']} means you wait" in story
    assert f"Last week you chose {label_of['D']} and your flatmate chose {label_of['C']}." in story
    explicit = P.build_prompt("D", "C", None, False, False, labelling, 0, "ipd", "explicit")
    assert f"where {label_of['C']} is to cooperate and {label_of['D']} is to defect" in explicit
    for text in (story, explicit):
        assert not re.search(r"\d+ points", text) and "|" not in text


def test_a_preprompt_comes_first():
    from interp_lib.formats import PREPROMPTS

    text = P.build_prompt("C", "C", preprompt="deontological")
    assert text == PREPROMPTS["deontological"] + "\n\n" + P.build_prompt("C", "C")


def test_every_format_gives_distinct_variants_up_to_its_wordings():
    from interp_lib.formats import FORMATS

    moves = {"self_last": "C", "opponent_last": "D"}
    for fmt in FORMATS:
        spec = {**({} if fmt in ("unrelated_game", "unrelated_pick") else
                   {"opponent_last": "D"} if fmt == "unrelated_opponent" else moves), "format": fmt}
        most = 16 if fmt.startswith("table") else 4 * {"friend": 2, "story": 1, "explicit": 1, "unrelated_game": 2,
                                                       "unrelated_pick": 2, "unrelated_opponent": 2}[fmt]
        texts = [r["prompt"] for r in P.scenario_records("S", spec, most, 0)]
        assert len(set(texts)) == most, fmt
        with pytest.raises(ValueError, match="variants_per_scenario"):
            P.scenario_records("S", spec, most + 1, 0)


def test_bad_formats_are_named():
    msg = check(lambda c: c["scenarios"]["CC_continue"].update(game="chicken", format="story"))
    assert msg == ("config: scenarios.CC_continue: format 'story' describes the Prisoner's Dilemma and cannot show "
                   "game 'chicken'"), msg
    msg = check(lambda c: (c["scenarios"]["CC_continue"].update(format="explicit"), c.update(variants_per_scenario=5)))
    assert msg == "config: scenarios.CC_continue: format 'explicit' has 4 distinct variants; variants_per_scenario is 5"
    assert "scenarios.CC_continue.format" in check(lambda c: c["scenarios"]["CC_continue"].update(format="poem"))


@pytest.mark.parametrize("labelling", P.LABELLINGS)
def test_new_action_symbols_replace_the_labels_everywhere(labelling):
    plain = P.build_prompt("C", "D", P.TEMPTATION_SENTENCE, True, False, labelling, 3, "ipd", "table_reversed")
    new = P.build_prompt("C", "D", P.TEMPTATION_SENTENCE, True, False, labelling, 3, "ipd", "table_reversed",
                         symbols=["action3", "action4"])
    assert "action1" not in new and "action2" not in new
    assert new == plain.replace("action1", "action3").replace("action2", "action4")
    records = P.scenario_records("S", {"self_last": "C", "opponent_last": "D", "labelling": labelling,
                                       "symbols": ["action3", "action4"]}, 3, 0)
    assert all(r["symbols"] == ["action3", "action4"] and "action3" in r["prompt"] for r in records)


def test_symbols_must_differ():
    msg = check(lambda c: c["scenarios"]["CC_continue"].update(symbols=["action3", "action3"]))
    assert msg == "config: scenarios.CC_continue.symbols: two distinct labels needed, got ['action3', 'action3']"
    assert "scenarios.CC_continue.symbols" in check(lambda c: c["scenarios"]["CC_continue"].update(symbols=["a b", "c"]))


@pytest.mark.real
def test_a_cache_reads_the_decision_between_the_scenarios_symbols(converted, tmp_path):
    """SmolLM2 on a stag-hunt prompt with action3 / action4: the cache's decision tokens are
    those labels' last tokens and its delta equals HF's own logits at the last position."""
    import h5py
    import torch

    from interp_lib.jobs import build_cache_file
    from interp_lib.model.loading import load_model
    from interp_lib.tokens import decision_input_ids, get_action_token_ids

    spec = {"self_last": "C", "opponent_last": "D", "game": "stag_hunt", "symbols": ["action3", "action4"]}
    records = P.scenario_records("SH3", spec, 1, 0)
    build_cache_file(converted, "smollm2", "SH3", records, tmp_path / "SH3.h5")
    hf, tokenizer = load_model("smollm2", {"base": str(converted)})
    tokens = get_action_token_ids(tokenizer, "action3", "action4")
    assert tokens["C"] != get_action_token_ids(tokenizer)["C"]
    with torch.no_grad():
        logits = hf(decision_input_ids(tokenizer, records[0]["prompt"], tokens)).logits[0, -1].double()
    with h5py.File(tmp_path / "SH3.h5") as f:
        attrs = dict(f["1"].attrs)
    assert (attrs["token_C"], attrs["token_D"]) == (tokens["C"], tokens["D"])
    assert attrs["delta"] == pytest.approx(float(logits[tokens["D"]] - logits[tokens["C"]]), abs=1e-4)



@pytest.mark.parametrize("labelling", P.LABELLINGS)
def test_unrelated_prompts_use_the_labels_outside_any_game(labelling):
    label_of = {"C": "action1", "D": "action2"} if labelling == "standard" else {"C": "action2", "D": "action1"}
    pick = P.build_prompt(None, None, None, False, False, labelling, 0, "ipd", "unrelated_pick")
    assert pick.startswith("Pick one of these two: action1 or action2.") and "game" not in pick
    game = P.build_prompt(None, None, None, True, False, labelling, 1, "ipd", "unrelated_game")
    assert "A" in game and "points" not in game and "|" not in game and "Last" not in game
    opponent = P.build_prompt(None, "D", None, False, False, labelling, 0, "ipd", "unrelated_opponent")
    assert f"Last time, A chose {label_of['D']}." in opponent and "points" not in opponent
    with pytest.raises(ValueError, match="shows no self_last"):
        P.build_prompt("C", "D", fmt="unrelated_opponent")


def test_unrelated_scenarios_state_only_what_their_format_shows():
    ok = copy.deepcopy(RAW)
    ok["scenarios"].update(U_pick={"format": "unrelated_pick"},
                           U_opp={"format": "unrelated_opponent", "opponent_last": "D", "counterbalance": True})
    validate_config(ok)
    assert ok["scenarios"]["U_opp_swapped"]["labelling"] == "swapped"
    # a format that shows no move gives the same prompts in both labellings: no sibling
    msg = check(lambda c: c["scenarios"].update(U={"format": "unrelated_game", "counterbalance": True}))
    assert msg == ("config: scenarios.U.counterbalance: format 'unrelated_game' shows no move, so both labellings "
                   "give the same prompts; remove it")
    msg = check(lambda c: c["scenarios"].update(U={"format": "unrelated_pick", "self_last": "C"}))
    assert msg == "config: scenarios.U.self_last: format 'unrelated_pick' shows no self_last; remove it"
    msg = check(lambda c: c["scenarios"].update(U={"format": "unrelated_opponent"}))
    assert msg == "config: scenarios.U.opponent_last: required (C or D) for format 'unrelated_opponent'"
    msg = check(lambda c: c["scenarios"].update(T={"opponent_last": "C"}))
    assert msg == "config: scenarios.T.self_last: required (C or D) for format 'table'"
    msg = check(lambda c: c["scenarios"].update(U={"format": "unrelated_game", "extra_sentence": "Hi."}))
    assert msg == "config: scenarios.U.extra_sentence: format 'unrelated_game' has no place for it"


def test_probes_leave_out_prompts_outside_any_game():
    import numpy as np

    from interp_lib.analyses.probes import probe_targets

    class Data:  # what probe_targets reads of DecisionActivations
        scenario = np.array(["CD", "CD", "CD_swapped", "U", "U_swapped"])
        labelling = np.array(["standard", "standard", "swapped", "standard", "swapped"])
        delta = np.array([2.0, -1.0, 3.0, 5.0, -5.0])

    meta = {"CD": {"opponent_last": "D"}, "CD_swapped": {"opponent_last": "D", "labelling": "swapped"},
            "U": {"opponent_last": None, "probe": False}, "U_swapped": {"labelling": "swapped", "probe": False}}
    targets = probe_targets(Data, meta)
    assert targets["decision"][0].tolist() == [0, 1] and targets["decision"][1].tolist() == [1, 0]
    assert targets["opponent_last"][0].tolist() == [0, 1] and targets["opponent_last"][1].tolist() == [1, 1]
    assert targets["decision_both_labellings"][0].tolist() == [0, 1, 2]
    assert targets["action_token"][1].tolist() == [1, 0, 0]  # CD_swapped defects by writing action1


def test_games_table_against_a_hand_computation(tmp_path):
    """Two models on a stag-hunt scenario and its swapped sibling, plus an IPD one: means of
    sigmoid(delta) and the label bias read back as computed by hand."""
    import math

    import numpy as np
    import pandas as pd

    from interp_lib.analyses.behaviour import label_bias
    from interp_lib.analyses.games import games_table
    from interp_lib.plots.games import plot_games

    rows = []
    deltas = {("tuned", "SH"): [2.0, 4.0], ("tuned", "SH_swapped"): [-2.0, -4.0],  # flips: a token
              ("base", "SH"): [1.0, 3.0], ("base", "SH_swapped"): [1.0, 2.0], ("base", "PD"): [-1.0, -3.0],
              ("tuned", "PD"): [0.5, -0.5]}
    for (model, scen), ds in deltas.items():
        for v, d in enumerate(ds, 1):
            rows.append({"model": model, "scenario": scen, "variant": v,
                         "labelling": "swapped" if scen.endswith("_swapped") else "standard", "template": 0,
                         "delta": d, "p_defect": 1 / (1 + math.exp(-d)), "action": "D" if d > 0 else "C"})
    decisions = pd.DataFrame(rows)
    meta = {"SH": {"game": "stag_hunt", "metric": "P(Defect)", "self_last": "C", "opponent_last": "D"},
            "SH_swapped": {"game": "stag_hunt", "metric": "P(Defect)", "self_last": "C", "opponent_last": "D"},
            "PD": {"game": "ipd", "metric": "P(Defect)", "format": "unrelated_pick"}}
    table = games_table(decisions, label_bias(decisions), meta).set_index(["model", "scenario"])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert table.loc[("tuned", "SH"), "p_second"] == pytest.approx((sig(2) + sig(4)) / 2)
    assert table.loc[("tuned", "SH"), "label_bias"] == pytest.approx(6.0)  # mean of (2+2, 4+4)
    assert table.loc[("tuned", "SH"), "decides_by"] == "token"
    assert table.loc[("base", "SH"), "same_decision_share"] == 1.0 and table.loc[("base", "SH"), "decides_by"] == "meaning"
    assert table.loc[("base", "SH"), "label_bias"] == pytest.approx(0.5)
    assert table.loc[("tuned", "PD"), "second_share"] == 0.5 and table.loc[("tuned", "PD"), "state"] == "--"
    assert table.loc[("base", "SH"), "state"] == "CD" and np.isnan(table.loc[("base", "PD"), "label_bias"])
    plot_games(table.reset_index(), tmp_path / "games.png")
    assert (tmp_path / "games.png").stat().st_size > 10_000


def test_a_prompt_the_tokenizer_cannot_spell_is_named_before_the_model_runs(tmp_path):
    """The embedded family's word-level vocabulary knows the table format of every game, not the
    other formats' words: the caching job refuses such a scenario in one line, naming the model,
    the scenario and the unknown words (issue 28 item 6)."""
    from interp_lib.jobs.caching import unknown_words
    from interp_lib.training.demo.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    for game in ("stag_hunt", "chicken", "bach_or_stravinsky", "defective_coordination"):
        for record in P.scenario_records("s", {"game": game, "self_last": "C", "opponent_last": "D"}, 3, 0):
            assert unknown_words(tokenizer, record["prompt"]) == []
    friend = P.scenario_records("s", {"self_last": "C", "opponent_last": "D", "format": "friend"}, 1, 0)[0]
    unknown = unknown_words(tokenizer, friend["prompt"])
    assert " friend" in unknown and len(unknown) > 3


@pytest.mark.parametrize("family", ["smollm2", "gemma3"])
def test_the_real_families_games_overlays_name_every_game_format_and_unrelated_prompt(family):
    """config.<family>.games.yaml over config.<family>.yaml (Snakemake's deep merge): a valid
    config with its own results_dir and float16 caches whose scenarios play the five games, the
    paper's formats, both preprompts, the test symbols and the three unrelated formats, so that
    the transfer rules run (issue 28 item 6); the two overlays hold the same scenarios."""
    from snakemake.utils import update_config

    from interp_lib.contexts import has_transfer, scenario_contexts
    from interp_lib.formats import FORMATS

    cfg = yaml.safe_load((REPO / f"config.{family}.yaml").read_text())
    overlay = yaml.safe_load((REPO / f"config.{family}.games.yaml").read_text())
    update_config(cfg, overlay)
    cfg = validate_config(cfg, source=f"config.{family}.games.yaml")
    assert cfg["results_dir"] == f"results_{family}_games" and cfg["analysis"]["cache_dtype"] == "float16"
    specs = cfg["scenarios"].values()
    assert {s["game"] for s in specs} == set(BUILTIN_GAMES)
    assert {s["format"] for s in specs} == set(FORMATS)
    assert {s["preprompt"] for s in specs} == {None, "utilitarian", "deontological"}
    assert ["action3", "action4"] in [s.get("symbols") for s in specs]
    assert has_transfer(scenario_contexts(cfg["scenarios"]))
    assert set(cfg["analysis"]["patch_scenarios"]) <= set(cfg["scenarios"])
    other = yaml.safe_load((REPO / "config.smollm2.games.yaml").read_text())
    assert overlay["scenarios"] == other["scenarios"] and overlay["analysis"] == other["analysis"]
