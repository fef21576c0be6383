"""LoRA adapters of the embedded model family, trained by policy gradient against Tit-for-Tat.

Each step draws random game states (both last moves, both orderings, the temptation sentence
as in pre-training) and, per state, SAMPLES several answers from the model's own
distribution after `<start_of_turn>model\\n`: the first token over the full vocabulary, then
(if it is the actions' shared prefix) the second. An answer other than exactly action1's or
action2's tokens is illegal (reward -6). The loss is REINFORCE with a leave-one-out baseline
(the mean reward of the other samples of the same state):  -sum_i A_i log pi(answer_i).
Nothing is frozen beyond what LoRA freezes: adapters on every linear layer of every block.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .common import (
    PromptCache,
    all_states,
    atomic_output_dir,
    decision_deltas,
    group_by_length,
    logger,
    p_action2_by_situation,
    sample_state,
    seed_everything,
    torch_threads,
)
from .rewards import ADAPTER_REWARDS, get_reward  # noqa: F401 (re-exported)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_R = 8
LORA_ALPHA = 16
RL_STEPS = 60
STATES_PER_STEP = 8
SAMPLES_PER_STATE = 64
LR = 5e-3
LR_FINAL_FRACTION = 0.1
GRAD_CLIP = 1.0
LOG_EVERY = 20


def load_base(base_dir: str | Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir), trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        str(base_dir), dtype=torch.float32, attn_implementation="eager", trust_remote_code=False
    )
    return model, tokenizer


def lora_config():
    from peft import LoraConfig

    return LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
    )


def _rollout(model, cache: PromptCache, states, n_samples: int, gen: torch.Generator, reward_fn):
    """Samples `n_samples` answers per drawn state (one forward pass per distinct prompt);
    returns (log-probs [n], rewards [n], prompt index [n], n_illegal). The log-probs carry
    gradients."""
    prefix = cache.actions["prefix"]
    if len(prefix) != 1:
        raise NotImplementedError("the demo tokenizer's actions share a one-token prefix")
    prefix_id, c_id, d_id = prefix[0], cache.actions["C"], cache.actions["D"]
    unique = list(dict.fromkeys(states))
    counts = [states.count(u) * n_samples for u in unique]
    seqs = [cache.decision_ids(s) for s in unique]
    logps, rewards, owners = [], [], []
    n_illegal = 0
    for _, idx in group_by_length(seqs).items():
        ids = torch.tensor([seqs[i] for i in idx])
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=2).logits.float()
        lp_first = torch.log_softmax(logits[:, 0], dim=-1)  # after "<start_of_turn>model\n"
        lp_second = torch.log_softmax(logits[:, 1], dim=-1)  # after the prefix token
        rows, firsts, seconds = [], [], []
        for row, i in enumerate(idx):
            firsts.append(torch.multinomial(lp_first[row].detach().exp(), counts[i], True, generator=gen))
            seconds.append(torch.multinomial(lp_second[row].detach().exp(), counts[i], True, generator=gen))
            rows.append(torch.full((counts[i],), row))
        rows, first, second = torch.cat(rows), torch.cat(firsts), torch.cat(seconds)
        on_prefix = first == prefix_id
        # An answer that does not start with the prefix is illegal whatever follows: the episode
        # ends at its first token.
        logps.append(lp_first[rows, first] + torch.where(on_prefix, lp_second[rows, second], 0.0))
        for row, t1_ok, t2 in zip(rows.tolist(), on_prefix.tolist(), second.tolist()):
            state = unique[idx[row]]
            action = ("C" if t2 == c_id else "D" if t2 == d_id else None) if t1_ok else None
            n_illegal += action is None
            rewards.append(reward_fn(action, state.own_last, state.opponent_last))
            owners.append(idx[row])
    return torch.cat(logps), torch.tensor(rewards), torch.tensor(owners), n_illegal


def _leave_one_out_advantage(rewards: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
    adv = torch.zeros_like(rewards)
    for o in owners.unique():
        mask = owners == o
        r = rewards[mask]
        n = r.numel()
        adv[mask] = r - (r.sum() - r) / (n - 1) if n > 1 else r - rewards.mean()
    return adv


def _illegal_probability(model, cache: PromptCache) -> float:
    """Mean over all training states of 1 - p(prefix) * (p(C | prefix) + p(D | prefix))."""
    seqs = [cache.decision_ids(s) for s in all_states()]
    total = 0.0
    with torch.no_grad():
        for _, idx in group_by_length(seqs).items():
            ids = torch.tensor([seqs[i] for i in idx])
            probs = torch.softmax(
                model(input_ids=ids, use_cache=False, logits_to_keep=2).logits.float(), dim=-1
            )
            legal = probs[:, 0, cache.actions["prefix"][0]] * (
                probs[:, 1, cache.actions["C"]] + probs[:, 1, cache.actions["D"]]
            )
            total += float((1 - legal).sum())
    return total / len(seqs)


def _canonicalise_adapter_config(path: Path) -> None:
    """PEFT writes target_modules from a set, in an order that changes with the hash seed; sort
    it so that the same seed always gives the same file."""
    cfg = json.loads(path.read_text())
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def train_adapter(
    base_dir: str | Path, out_dir: str | Path, reward: str, seed: int = 0, rl_steps: int | None = None
) -> dict:
    """Trains one LoRA adapter on `base_dir` with the named reward and saves it (PEFT format,
    `base_model_name_or_path` = `base_dir` as given) into `out_dir`."""
    from peft import get_peft_model

    reward_fn = get_reward(reward)
    steps = RL_STEPS if rl_steps is None else int(rl_steps)
    t0 = time.time()
    with torch_threads() as n_threads:
        model, tokenizer = load_base(base_dir)
        cache = PromptCache(tokenizer)
        p2_base = p_action2_by_situation(model, cache)
        rng = seed_everything(seed)
        gen = torch.Generator().manual_seed(seed + 12345)
        model = get_peft_model(model, lora_config())
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=LR, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda i: LR_FINAL_FRACTION
            + (1 - LR_FINAL_FRACTION) * 0.5 * (1 + math.cos(math.pi * i / max(1, steps))),
        )
        model.train()
        mean_rewards, illegal = [], 0
        n_samples = 0
        for step in tqdm(range(steps), desc=f"demo adapter ({reward})", mininterval=2.0):
            states = [sample_state(rng) for _ in range(STATES_PER_STEP)]
            logp, rewards, owners, n_bad = _rollout(model, cache, states, SAMPLES_PER_STATE, gen, reward_fn)
            adv = _leave_one_out_advantage(rewards, owners)
            loss = -(adv * logp).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP)
            opt.step()
            sched.step()
            mean_rewards.append(float(rewards.mean()))
            illegal += n_bad
            n_samples += len(rewards)
            if (step + 1) % LOG_EVERY == 0 or step == steps - 1:
                recent = mean_rewards[-LOG_EVERY:]
                logger.info(
                    "adapter %s step %d/%d: mean reward %.3f over the last %d steps, %d illegal answers this step; p(action2) %s",
                    reward,
                    step + 1,
                    steps,
                    sum(recent) / len(recent),
                    len(recent),
                    n_bad,
                    p_action2_by_situation(model, cache),
                )
                model.train()
        model.eval()
        p2 = p_action2_by_situation(model, cache)
        p_illegal = _illegal_probability(model, cache)
        deltas = decision_deltas(model, cache, all_states())
        lora_b_norm = sum(float(p.detach().norm()) for n, p in model.named_parameters() if "lora_B" in n)
        with atomic_output_dir(out_dir) as tmp:
            model.save_pretrained(str(tmp))
            _canonicalise_adapter_config(Path(tmp) / "adapter_config.json")
    k = min(10, len(mean_rewards))
    stats = {
        "reward": reward,
        "seed": seed,
        "rl_steps": steps,
        "threads": n_threads,
        "mean_reward_start": sum(mean_rewards[:k]) / k if k else None,
        "mean_reward_end": sum(mean_rewards[-k:]) / k if k else None,
        "mean_reward_per_step": mean_rewards,
        "illegal_rate_sampled": illegal / max(1, n_samples),
        "illegal_prob_final": p_illegal,
        "p_action2_base": p2_base,
        "p_action2": p2,
        "min_abs_delta": min(abs(d) for d in deltas),
        "lora_B_norm": lora_b_norm,
        "time_s": round(time.time() - t0, 2),
    }
    logger.info(
        "adapter %s trained in %.1f s: reward %.3f -> %.3f, p(action2) %s",
        reward,
        stats["time_s"],
        stats["mean_reward_start"] or 0,
        stats["mean_reward_end"] or 0,
        p2,
    )
    return stats
