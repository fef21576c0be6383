"""The embedded base model: a tiny Gemma-2 pre-trained on IPD prompts and a "base" policy.

Every Gemma-2 feature is kept: GQA, alternating sliding-window/global attention with a
window shorter than the prompts, attention and final logit soft-capping,
`query_pre_attn_scalar`, gelu-tanh MLPs, pre- and post-norms, tied embeddings.

Training sequences are the chat-templated prompt of a random game state, the answer and
`<end_of_turn>`. The loss is the plain LM loss over the whole sequence plus, at the answer
digit, the cross-entropy against the base policy's distribution (P(action2) = 0.35 after the
opponent's C, 0.8 after its D), up-weighted by ANSWER_WEIGHT. Using the policy's
probabilities as the digit's target (rather than one sampled answer) is the same loss in
expectation with no sampling noise; the answer written into the sequence is sampled.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .common import (
    GameState,
    PromptCache,
    atomic_output_dir,
    group_by_length,
    logger,
    p_action2_by_situation,
    sample_state,
    seed_everything,
    torch_threads,
)
from .tokenizer import END_OF_TURN, build_tokenizer, save_tokenizer

MODEL_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    query_pre_attn_scalar=16,
    sliding_window=32,
    attn_logit_softcapping=50.0,
    final_logit_softcapping=30.0,
    hidden_activation="gelu_pytorch_tanh",
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    initializer_range=0.02,
    tie_word_embeddings=True,
)
# 200 steps learned the base policy with AVX2 kernels but not with AVX-512 ones (CD stayed
# at 0.48 instead of 0.80: float rounding sends training elsewhere); from 300 steps on
# both learn it (measured 2026-11-28, torch 2.13 CPU, ATEN_CPU_CAPABILITY avx2 / avx512).
PRETRAIN_STEPS = 300
BATCH_SIZE = 12
LR = 1e-2
WARMUP = 10
WEIGHT_DECAY = 0.01
ANSWER_WEIGHT = 1.0
LOG_EVERY = 50


def base_policy_p_action2(state: GameState) -> float:
    """The base policy leans Defect but depends on the opponent's last move."""
    return 0.35 if state.opponent_last == "C" else 0.8


def make_config(tokenizer):
    from transformers import Gemma2Config

    n_layers = MODEL_CONFIG["num_hidden_layers"]
    cfg = dict(MODEL_CONFIG)
    rope_theta = cfg.pop("rope_theta")
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        use_cache=True,
        **cfg,
    )
    config._attn_implementation = "eager"
    return config


def _training_batch(rng, cache: PromptCache, batch_size: int):
    """Unique (sequence, target p(action2)) pairs of a sampled batch, with their counts."""
    acts = cache.actions
    counts: dict[tuple, int] = {}
    for _ in range(batch_size):
        state = sample_state(rng)
        p2 = base_policy_p_action2(state)
        answer = acts["D"] if rng.random() < p2 else acts["C"]
        key = (tuple(cache.decision_ids(state) + [answer, cache.end_of_turn]), p2)
        counts[key] = counts.get(key, 0) + 1
    return list(counts.items())


def _loss(model, cache: PromptCache, batch, answer_weight: float):
    """Token-mean LM loss + answer_weight * sequence-mean answer cross-entropy, both weighted by
    multiplicity in the sampled batch."""
    c_id, d_id = cache.actions["C"], cache.actions["D"]
    seqs = [list(k[0]) for k, _ in batch]
    lm_sum = ans_sum = 0.0
    n_tok = n_seq = 0
    for _, idx in group_by_length(seqs).items():
        ids = torch.tensor([seqs[i] for i in idx])
        w = torch.tensor([float(batch[i][1]) for i in idx])
        p2 = torch.tensor([batch[i][0][1] for i in idx])
        logp = torch.log_softmax(model(input_ids=ids, use_cache=False).logits.float(), dim=-1)
        tok_lp = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]  # [b, T-1]
        # The digit (at -2) is scored by the soft target instead of the sampled answer.
        tok_lp = torch.cat([tok_lp[:, :-2], tok_lp[:, -1:]], dim=1)
        lm_sum = lm_sum - (tok_lp.sum(1) * w).sum()
        n_tok += int(w.sum()) * tok_lp.shape[1]
        dec = logp[:, -3]  # the position after the prefix token predicts the digit
        ans = -(p2 * dec[:, d_id] + (1 - p2) * dec[:, c_id])
        ans_sum = ans_sum + (ans * w).sum()
        n_seq += int(w.sum())
    lm = lm_sum / n_tok
    ans = ans_sum / n_seq
    return lm + answer_weight * ans, lm.item(), ans.item()


def pretrain(model, tokenizer, seed: int, steps: int, batch_size: int | None = None, lr: float | None = None):
    batch_size = batch_size or BATCH_SIZE
    lr = lr or LR
    rng = seed_everything(seed + 1)
    cache = PromptCache(tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY, betas=(0.9, 0.98))

    def lr_at(step):
        if step < WARMUP:
            return (step + 1) / WARMUP
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / max(1, steps - WARMUP)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    history = []
    for step in tqdm(range(steps), desc="demo base pre-training", mininterval=2.0):
        batch = _training_batch(rng, cache, batch_size)
        loss, lm, ans = _loss(model, cache, batch, ANSWER_WEIGHT)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        history.append((loss.item(), lm, ans))
        if (step + 1) % LOG_EVERY == 0 or step == steps - 1:
            logger.info(
                "pretrain step %d/%d: loss %.4f (lm %.4f, answer %.4f)", step + 1, steps, *history[-1]
            )
    model.eval()
    return history


def build_base_model(out_dir: str | Path, seed: int = 0, pretrain_steps: int | None = None) -> dict:
    """Builds the tokenizer and the pre-trained tiny Gemma-2 base into `out_dir`
    (config.json, model.safetensors, tokenizer files). Deterministic under `seed`."""
    from transformers import Gemma2ForCausalLM

    t0 = time.time()
    steps = PRETRAIN_STEPS if pretrain_steps is None else int(pretrain_steps)
    with torch_threads() as n_threads:
        tokenizer = build_tokenizer()
        seed_everything(seed)
        config = make_config(tokenizer)
        model = Gemma2ForCausalLM(config).float()
        # As Gemma-2-it: generation stops at <eos> or <end_of_turn>.
        model.generation_config.eos_token_id = [
            tokenizer.eos_token_id,
            tokenizer.convert_tokens_to_ids(END_OF_TURN),
        ]
        history = pretrain(model, tokenizer, seed, steps)
        p2 = p_action2_by_situation(model, PromptCache(tokenizer))
        with atomic_output_dir(out_dir) as tmp:
            model.save_pretrained(str(tmp))
            save_tokenizer(tokenizer, tmp)
    stats = {
        "seed": seed,
        "pretrain_steps": steps,
        "final_loss": history[-1][0] if history else None,
        "final_lm_loss": history[-1][1] if history else None,
        "final_answer_loss": history[-1][2] if history else None,
        "n_params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "threads": n_threads,
        "p_action2": p2,
        "time_s": round(time.time() - t0, 2),
    }
    logger.info("base model built in %.1f s: %s", stats["time_s"], stats)
    return stats
