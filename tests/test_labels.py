"""Counterbalanced labels and paraphrased variants: the prompts' semantics under both
labellings (hand-computed), distinct variants, the labelled action tokens, and the label
bias and bootstrap intervals against hand computations."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from interp_lib import prompts as P
from interp_lib.analyses.behaviour import behaviour_summary, label_bias
from interp_lib.stats import mean_ci
from interp_lib.tokens import labelled_action_tokens


def parse_prompt(text: str) -> dict:
    """What a reader of a prompt learns: label -> move, from the payoff table read with the
    IPD's payoffs (mutual cooperation 3, 3), and the history in labels and points."""
    rows = re.findall(r"^\| (action[12]) \| (\d), (\d) \| (\d), (\d) \|$", text, flags=re.M)
    table = {(own, opp): (int(a), int(b)) for own, *cells in rows
             for opp, a, b in (("action1", cells[0], cells[1]), ("action2", cells[2], cells[3]))}
    coop = next(label for label in ("action1", "action2") if table[(label, label)] == (3, 3))
    move = {coop: "C", ("action2" if coop == "action1" else "action1"): "D"}
    own, opp = re.search(r"(?:played|chose|selected) (action[12]).*?(?:played|chose|selected) (action[12])",
                         text.split("\n")[-1]).groups()
    return {"move": move, "table": table, "own": move[own], "opp": move[opp],
            "points": tuple(int(x) for x in re.findall(r"(\d) points", text.split("\n")[-1])[:2])}


@pytest.mark.parametrize("template", range(len(P.TEMPLATES)))
@pytest.mark.parametrize("labelling", P.LABELLINGS)
def test_every_prompt_states_the_game_state_in_its_labelling(template, labelling):
    for (own, opp), points in P.PAYOFFS.items():
        text = P.build_prompt(own, opp, None, True, False, labelling, template)
        seen = parse_prompt(text)
        assert seen["move"] == ({"action1": "C", "action2": "D"} if labelling == "standard"
                                else {"action1": "D", "action2": "C"})
        assert (seen["own"], seen["opp"], seen["points"]) == (own, opp, points)
        # the table is the IPD's in every cell
        for (a, b), cell in seen["table"].items():
            assert cell == P.PAYOFFS[(seen["move"][a], seen["move"][b])]


def test_the_extra_sentence_is_relabelled():
    swapped = P.build_prompt("C", "C", P.TEMPTATION_SENTENCE, labelling="swapped")
    assert "if you had played action1 while they played action2, you would have gotten 4 points" in swapped
    assert P.TEMPTATION_SENTENCE in P.build_prompt("C", "C", P.TEMPTATION_SENTENCE)


def test_template_0_is_the_papers_wording_and_variants_are_distinct():
    text = P.build_prompt("C", "D")
    assert text.startswith("You are playing a game with another agent A. You must choose either action action1 or "
                           "action action2. Depending on your action and A's action")
    assert text.endswith("Last time, you played action1 and they played action2, so you got 0 points and A got 4 "
                         "points. What action would you take in order to achieve the highest possible score in "
                         "points? Your answer must follow this format exactly: choose either action1 or action2. "
                         "Do not explain your reasoning. Your answer:")
    spec = {"self_last": "C", "opponent_last": "D"}
    records = P.scenario_records("CD_punished", spec, P.MAX_VARIANTS, seed=0)
    sibling, sibling_spec = P.swapped_sibling("CD_punished", spec)
    swapped = P.scenario_records(sibling, sibling_spec, P.MAX_VARIANTS, seed=0)
    assert sibling == "CD_punished_swapped"
    assert len(records) == len(swapped) == P.MAX_VARIANTS
    assert len({r["prompt"] for r in records + swapped}) == 2 * P.MAX_VARIANTS
    assert [r["variant"] for r in swapped] == list(range(1, P.MAX_VARIANTS + 1))
    # the sibling's variant k has variant k's wording and ordering in the swapped labelling
    for std, swp in zip(records, swapped):
        assert (std["labelling"], swp["labelling"]) == ("standard", "swapped")
        assert std["template"] == swp["template"]
        assert std["prompt"].split("\n")[0] == swp["prompt"].split("\n")[0]  # same wording, same label order
    # the first four variants are the orderings earlier versions gave (template 0)
    assert [r["template"] for r in P.scenario_records("x", spec, 4, 0)] == [0] * 4
    with pytest.raises(ValueError, match="between 1 and 16"):
        P.variant_settings("x", 17, 0)


def test_labelled_action_tokens_exchange_cooperate_and_defect():
    tokens = {"prefix": [9], "C": 5, "D": 7}
    assert labelled_action_tokens(tokens, "standard") == tokens
    assert labelled_action_tokens(tokens, "swapped") == {"prefix": [9], "C": 7, "D": 5}
    with pytest.raises(ValueError, match="labelling"):
        labelled_action_tokens(tokens, "other")


def test_label_bias_of_a_pure_token_preference():
    """delta = s + b (standard) and s - b (swapped) for a model that prefers the token of
    action2 by b: label_bias = 2b, and a model without it (b = 0) has label bias 0 and the
    same decisions."""
    s = np.array([1.5, -0.5, 2.0])
    rows = []
    for model, b in (("biased", 0.75), ("unbiased", 0.0)):
        for k, sk in enumerate(s):
            rows.append({"model": model, "scenario": "CC", "variant": k + 1, "labelling": "standard",
                         "delta": sk + b, "action": "D" if sk + b > 0 else "C"})
            rows.append({"model": model, "scenario": "CC_swapped", "variant": k + 1, "labelling": "swapped",
                         "delta": sk - b, "action": "D" if sk - b > 0 else "C"})
    out = label_bias(pd.DataFrame(rows)).set_index("model")
    assert set(out["scenario"]) == {"CC"}
    assert out.loc["biased", "label_bias"] == pytest.approx(1.5)
    assert out.loc["biased", "ci_low"] == out.loc["biased", "ci_high"] == pytest.approx(1.5)  # b is constant
    assert out.loc["unbiased", "label_bias"] == 0.0 and out.loc["unbiased", "same_decision_share"] == 1.0
    assert out.loc["biased", "same_decision_share"] == pytest.approx(2 / 3)  # -0.5 + 0.75 > 0 > -0.5 - 0.75
    assert out.loc["biased", "n_pairs"] == 3
    summary = behaviour_summary(pd.DataFrame(rows))
    assert list(summary["labelling"].unique()) == ["standard", "swapped"] and (summary["n"] == 3).all()
    assert set(summary["scenario"]) == {"CC", "CC_swapped"}


def test_bootstrap_interval_against_a_naive_resampling():
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 2.0, size=12)
    mean, lo, hi = mean_ci(x)
    boot = np.array([rng.choice(x, size=x.size).mean() for _ in range(20000)])
    naive_lo, naive_hi = np.percentile(boot, [2.5, 97.5])
    assert mean == pytest.approx(x.mean())
    assert abs(lo - naive_lo) < 0.1 and abs(hi - naive_hi) < 0.1  # Monte Carlo error of both
    assert lo < mean < hi
    assert all(math.isnan(v) for v in mean_ci([1.0])[1:])


def test_grouped_intervals_equal_one_group_at_a_time():
    from interp_lib.stats import grouped_mean_ci

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"g": np.repeat(["a", "b", "c", "d"], [5, 5, 3, 1]), "v": rng.normal(size=14)})
    grouped = grouped_mean_ci(df, ["g"], "v").set_index("g")
    for g, sub in df.groupby("g"):
        mean, lo, hi = mean_ci(sub["v"])
        assert grouped.loc[g, "mean"] == pytest.approx(mean)
        if g == "d":
            assert math.isnan(grouped.loc[g, "ci_low"]) and math.isnan(lo)
        else:
            assert lo <= mean <= hi and abs(grouped.loc[g, "ci_low"] - lo) < 0.25 * (hi - lo)
