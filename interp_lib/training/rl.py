"""LoRA adapters trained against Tit-for-Tat on a Hugging Face causal LM: the paper's four
rewards on real weights, by the exact policy gradient of the expected reward.

Per game state the answer has three outcomes: action1 or action2 (the shared prefix, then
one differing token) or anything else (illegal, -6). Their probabilities are products of two
next-token distributions (after the assistant turn starts, and after the prefix), so
    J = mean over states s of  sum_a pi(a | s) R(a, s),   a in {C, D, illegal}
and its gradient are computed exactly, over every training state, at every step. This is the
expectation that a sampled REINFORCE or PPO estimate approximates: no sampling noise, and the
run is deterministic for a seed (the seed draws the LoRA A matrices).

Speed: the training prompts share long prefixes (the chat header and the rules up to the
last round). Each shared stretch is run once per step and its keys/values are reused by the
prompts that extend it; gradients flow through them (`prefix_tree.shared_prefix_logits`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .demo.common import (
    PromptCache,
    all_states,
    atomic_output_dir,
)
from .demo.rewards import ILLEGAL_REWARD, REWARDS, get_reward
from .demo.rl import LORA_TARGETS, _canonicalise_adapter_config
from ..model.prefix_tree import shared_prefix_logits

logger = logging.getLogger("interp_lib.training.rl")

TRAINING_FILE = "training.json"


@dataclass(frozen=True)
class RLSettings:
    """One adapter's training run. `rank`/`alpha` are LoRA's r and lora_alpha (the paper:
    64 and 32, on every linear layer of every block); the learning rate decays on a cosine
    to `lr_final_fraction` of `lr`. The update's size grows with the rank at a given lr:
    5e-4 for rank 64, 5e-3 for rank 1 (measured on SmolLM2, docs/smollm2.md)."""

    reward: str
    rank: int = 64
    alpha: float = 32.0
    steps: int = 20
    lr: float = 5e-4
    seed: int = 0
    lr_final_fraction: float = 0.1
    grad_clip: float = 1.0
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    # ("standard", "swapped"): also train on every state with action1 = Defect, so that
    # the policy has to read the labels' meaning (no label bias by construction of the data).
    labellings: tuple[str, ...] = ("standard",)
    # lambda >= 0 of a penalty lambda * mean over swapped pairs of (delta(standard) -
    # delta(swapped))^2, delta = logit(Defect) - logit(Cooperate) after the prefix: the label
    # bias on the training states. 0 is the paper's objective (expected reward alone); it
    # needs both labellings.
    label_consistency: float = 0.0
    # A PEFT adapter directory to continue from instead of a fresh LoRA (its r, lora_alpha and
    # target modules must be these settings'): e.g. add label_consistency to a learned policy.
    init_adapter: str | None = None

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; expected one of {sorted(REWARDS)}")
        if self.rank < 1 or self.steps < 1 or self.lr <= 0:
            raise ValueError("rank and steps must be >= 1 and lr > 0")
        labellings = tuple(self.labellings)  # a config gives a list
        unknown = sorted(set(labellings) - {"standard", "swapped"})
        if not labellings or unknown or len(set(labellings)) != len(labellings):
            raise ValueError(f"labellings must be distinct values of standard, swapped; got {list(labellings)}")
        object.__setattr__(self, "labellings", labellings)
        if self.label_consistency < 0 or (self.label_consistency > 0 and len(labellings) < 2):
            raise ValueError("label_consistency must be >= 0, and > 0 only with both labellings")


def _decision_logits(model, cache: PromptCache, states) -> torch.Tensor:
    """`[n_states, 2, vocab]`: logits after the assistant turn starts and after the prefix."""
    if len(cache.actions["prefix"]) != 1:
        raise NotImplementedError(
            f"actions with a {len(cache.actions['prefix'])}-token shared prefix; training expects exactly one"
        )
    return shared_prefix_logits(model, [cache.decision_ids(s) for s in states], n_last=2)


def _swapped(states) -> torch.Tensor:
    return torch.tensor([getattr(s, "labelling", "standard") == "swapped" for s in states])


def _outcome_probabilities(logits: torch.Tensor, actions: dict, states) -> tuple[torch.Tensor, torch.Tensor]:
    """(p(Cooperate), p(Defect)): the label action1's and action2's probabilities, exchanged
    for states in the swapped labelling. `actions` C and D are action1's and action2's tokens."""
    p_prefix = torch.softmax(logits[:, 0], dim=-1)[:, actions["prefix"][0]]
    p_second = torch.softmax(logits[:, 1], dim=-1)
    p1, p2 = p_prefix * p_second[:, actions["C"]], p_prefix * p_second[:, actions["D"]]
    swapped = _swapped(states).to(p1.device)
    return torch.where(swapped, p2, p1), torch.where(swapped, p1, p2)


def outcome_probabilities(model, cache: PromptCache, states) -> tuple[torch.Tensor, torch.Tensor]:
    """(p(Cooperate), p(Defect)) per state, `[n_states]` each, with gradients; the rest of the
    probability mass is an illegal answer."""
    return _outcome_probabilities(_decision_logits(model, cache, states), cache.actions, states)


def meaning_deltas(logits: torch.Tensor, actions: dict, states) -> torch.Tensor:
    """`[n_states]` logit(Defect) - logit(Cooperate) after the prefix (action1's and action2's
    tokens exchanged in the swapped labelling); `logits` as _decision_logits."""
    d = logits[:, 1, actions["D"]] - logits[:, 1, actions["C"]]  # action2 - action1
    return torch.where(_swapped(states).to(d.device), -d, d)


def _pair_key(state) -> tuple:
    return (state.own_last, state.opponent_last, state.temptation, state.swap_opening, state.swap_answer)


def label_gaps(logits: torch.Tensor, actions: dict, states) -> dict:
    """Pair key -> delta(standard) - delta(swapped) of the states present in both labellings."""
    deltas = meaning_deltas(logits, actions, states).tolist()
    by_labelling: dict = {"standard": {}, "swapped": {}}
    for state, d in zip(states, deltas):
        by_labelling[getattr(state, "labelling", "standard")][_pair_key(state)] = d
    std, swp = by_labelling["standard"], by_labelling["swapped"]
    return {k: std[k] - swp[k] for k in std if k in swp}


def expected_reward(p_c: torch.Tensor, p_d: torch.Tensor, states, reward: str) -> torch.Tensor:
    """Mean over states of p_C R(C) + p_D R(D) + (1 - p_C - p_D) * ILLEGAL_REWARD (a scalar)."""
    fn = get_reward(reward)
    r_c = torch.tensor([fn("C", s.own_last, s.opponent_last) for s in states])
    r_d = torch.tensor([fn("D", s.own_last, s.opponent_last) for s in states])
    return (p_c * r_c + p_d * r_d + (1 - p_c - p_d) * ILLEGAL_REWARD).mean()


def lora_config(settings: RLSettings):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=0.0,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )


def load_base(base_dir: str | Path):
    """(float32 model, tokenizer) of a Hugging Face model directory."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir), trust_remote_code=False)
    # SDPA has no attention-logit softcap (Gemma-2 has one): eager attention there.
    config = AutoConfig.from_pretrained(str(base_dir), trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        str(base_dir),
        dtype=torch.float32,
        attn_implementation="eager" if getattr(config, "attn_logit_softcapping", None) else "sdpa",
        trust_remote_code=False,
    )
    return model, tokenizer


def behaviour_from_logits(logits: torch.Tensor, actions: dict, states, reward: str) -> dict:
    """P(action2 | {action1, action2}) = sigmoid(logit[D] - logit[C]) after the prefix,
    averaged per situation (CC, CC+T, CD, DC, DD) over the orderings; the mean probability
    of an illegal answer; the expected reward under `reward`. `logits` as _decision_logits."""
    logits = logits.detach()
    p_c, p_d = _outcome_probabilities(logits, actions, states)
    p_action2 = torch.sigmoid(logits[:, 1, actions["D"]] - logits[:, 1, actions["C"]])
    by_situation: dict[str, list[float]] = {}
    defect_swapped: dict[str, list[float]] = {}
    for state, p in zip(states, p_action2.tolist()):
        if getattr(state, "labelling", "standard") == "swapped":
            defect_swapped.setdefault(state.situation, []).append(1.0 - p)
        else:
            by_situation.setdefault(state.situation, []).append(p)
    out = {
        "p_action2": {k: round(sum(v) / len(v), 4) for k, v in by_situation.items()},
        "p_illegal": round(float((1 - p_c - p_d).mean()), 6),
        "expected_reward": round(float(expected_reward(p_c, p_d, states, reward)), 6),
    }
    if defect_swapped:  # P(Defect) = P(action1) in the swapped labelling
        out["p_defect_swapped"] = {k: round(sum(v) / len(v), 4) for k, v in defect_swapped.items()}
        gaps: dict[str, list[float]] = {}
        situation = {_pair_key(s): s.situation for s in states}
        for key, gap in label_gaps(logits, actions, states).items():
            gaps.setdefault(situation[key], []).append(gap)
        # the label bias on the training states: delta(standard) - delta(swapped), in logits
        out["label_bias"] = {k: round(sum(v) / len(v), 3) for k, v in gaps.items()}
    return out


@torch.no_grad()
def behaviour(model, cache: PromptCache, states, reward: str) -> dict:
    """behaviour_from_logits of one forward pass of `model` over `states`."""
    return behaviour_from_logits(_decision_logits(model, cache, states), cache.actions, states, reward)


def accumulate_gradient(model, cache: PromptCache, parts: list, settings: RLSettings):
    """Adds to the parameters' .grad the gradient of the loss -J + lambda * mean over pairs
    of gap^2 (gap = delta(standard) - delta(swapped), lambda = settings.label_consistency)
    over the states of `parts` (lists of states), one backward pass per part; returns (J,
    the penalty, the detached logits of every state in order [n, 2, vocab])."""
    states = [s for part in parts for s in part]
    lam, gaps = settings.label_consistency, {}
    if lam > 0:
        # The penalty's gradient, lambda / n_pairs * sum 2 gap (grad delta_std - grad delta_swp),
        # needs every pair's gap first: one pass without gradients; then each part adds its
        # gap-weighted deltas (the gaps held fixed) to its loss, which has exactly that gradient.
        with torch.no_grad():
            gaps = label_gaps(_decision_logits(model, cache, states), cache.actions, states)
    step_logits, reward = [], 0.0
    for part in parts:
        logits = _decision_logits(model, cache, part)
        p_c, p_d = _outcome_probabilities(logits, cache.actions, part)
        part_reward = expected_reward(p_c, p_d, part, settings.reward) * (len(part) / len(states))
        loss = -part_reward
        if lam > 0:
            weight = torch.tensor([(1.0 if s.labelling == "standard" else -1.0) * gaps[_pair_key(s)] for s in part])
            loss = loss + lam * 2.0 / len(gaps) * (weight * meaning_deltas(logits, cache.actions, part)).sum()
        loss.backward()
        reward += float(part_reward.detach())
        step_logits.append(logits.detach())
    penalty = lam * sum(g * g for g in gaps.values()) / len(gaps) if gaps else 0.0
    return reward, penalty, torch.cat(step_logits)


def _start_adapter(model, settings: RLSettings):
    """`model` with a fresh LoRA of `settings`, or with settings.init_adapter loaded trainable."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if settings.init_adapter is None:
        return get_peft_model(model, lora_config(settings))
    path = Path(settings.init_adapter)
    try:
        found = LoraConfig.from_pretrained(str(path))
    except ValueError as exc:
        raise ValueError(f"init_adapter {path}: not a PEFT adapter directory ({exc})") from None
    wanted = {"r": settings.rank, "lora_alpha": settings.alpha, "target_modules": sorted(settings.target_modules)}
    got = {"r": found.r, "lora_alpha": found.lora_alpha, "target_modules": sorted(found.target_modules or [])}
    if got != wanted:
        diff = ", ".join(f"{k} {got[k]} (settings: {wanted[k]})" for k in wanted if got[k] != wanted[k])
        raise ValueError(f"init_adapter {path}: {diff}; set rank, alpha to the adapter's")
    return PeftModel.from_pretrained(model, str(path), is_trainable=True)


def train_rl_adapter(base_dir: str | Path, out_dir: str | Path, settings: RLSettings) -> dict:
    """Trains one LoRA adapter on `base_dir` and saves it into `out_dir` (PEFT format,
    `base_model_name_or_path` = `base_dir` as given) with TRAINING_FILE: the settings, the
    expected reward per step, and behaviour before and after (P(action2) per situation)."""
    t0 = time.time()
    torch.manual_seed(settings.seed)
    model, tokenizer = load_base(base_dir)
    cache = PromptCache(tokenizer)
    states = all_states(tuple(settings.labellings))
    model.eval()  # as loaded: no dropout while training either (the policy is deterministic)
    model = _start_adapter(model, settings)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=0.0)
    final = settings.lr_final_fraction
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: final + (1 - final) * 0.5 * (1 + math.cos(math.pi * i / settings.steps))
    )
    rewards, before = [], None
    # One backward pass per labelling (their prompts share no long prefix anyway): the gradient
    # of the mean over all states is the sum of each part's, weighted by its share of the
    # states, and only one part's activations are held at a time.
    parts = [[s for s in states if s.labelling == labelling] for labelling in settings.labellings]
    penalties = []
    with torch.enable_grad():  # also when called under torch.no_grad()
        for step in tqdm(range(settings.steps), desc=f"rl adapter ({settings.reward})", mininterval=2.0):
            opt.zero_grad(set_to_none=True)
            reward, penalty, step_logits = accumulate_gradient(model, cache, parts, settings)
            if before is None:  # the base model's (LoRA's B starts at zero) or init_adapter's
                before = behaviour_from_logits(step_logits, cache.actions, states, settings.reward)
            torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
            opt.step()
            sched.step()
            rewards.append(round(reward, 6))
            if settings.label_consistency > 0:
                penalties.append(round(penalty, 6))
            logger.info("adapter %s step %d/%d: expected reward %.4f%s", settings.reward, step + 1, settings.steps,
                        rewards[-1], f", label penalty {penalties[-1]:.4f}" if penalties else "")
    model.eval()
    after = behaviour(model, cache, states, settings.reward)
    stats = {
        "settings": asdict(settings),
        "base": str(base_dir),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "torch_threads": torch.get_num_threads(),
        "expected_reward_per_step": rewards,
        **({"label_penalty_per_step": penalties} if penalties else {}),
        "before": before,
        "after": after,
        "time_s": round(time.time() - t0, 1),
    }
    with atomic_output_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        (Path(tmp) / "README.md").unlink(missing_ok=True)  # PEFT's empty model card
        _canonicalise_adapter_config(Path(tmp) / "adapter_config.json")
        (Path(tmp) / TRAINING_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    logger.info("adapter %s trained in %.1f s: expected reward %.3f -> %.3f, P(action2) %s",
                settings.reward, stats["time_s"], before["expected_reward"], after["expected_reward"],
                after["p_action2"])
    return stats
