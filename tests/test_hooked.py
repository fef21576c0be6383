"""The hooked model against Hugging Face's own forward pass, and the decomposition
identities every analysis relies on."""

import pytest
import torch
from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig,
                          LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM)

from interp_lib.model.attention_blocks import query_blocks
from interp_lib.model.hooked import HookedModel, UnsupportedArchitecture


def _randomize(model, std=0.1):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std)
    return model.eval()


def tiny_gemma2():
    cfg = Gemma2Config(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                       query_pre_attn_scalar=24, max_position_embeddings=128, attn_implementation="eager")
    return _randomize(Gemma2ForCausalLM(cfg))


def tiny_gemma3(**extra):
    """Gemma-3 text: q/k norms, 5 sliding layers (RoPE base 1e4) to 1 global (base 1e6), one
    key/value head, no softcaps: the 270m's shape, small. Softcaps can be switched on."""
    settings = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
                    num_key_value_heads=1, head_dim=16, sliding_window=8, query_pre_attn_scalar=24,
                    max_position_embeddings=128, attn_implementation="eager")
    cfg = Gemma3TextConfig(**{**settings, **extra})
    return _randomize(Gemma3ForCausalLM(cfg))


def tiny_qwen3():
    """Qwen3: q/k norms on the Llama block; layers 1-2 slide (window 6)."""
    return tiny(Qwen3Config, Qwen3ForCausalLM, head_dim=16, use_sliding_window=True, sliding_window=6,
                max_window_layers=1)


def tiny(config_cls, model_cls, **extra):
    cfg = config_cls(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                     attn_implementation="eager", **extra)
    return _randomize(model_cls(cfg))


MODELS = {
    "gemma2": tiny_gemma2,
    "llama": lambda: tiny(LlamaConfig, LlamaForCausalLM),
    "qwen2": lambda: tiny(Qwen2Config, Qwen2ForCausalLM),
    "mistral": lambda: tiny(MistralConfig, MistralForCausalLM, sliding_window=6),
    "gemma3": tiny_gemma3,
    "gemma3_softcaps": lambda: tiny_gemma3(attn_logit_softcapping=20.0, final_logit_softcapping=15.0),
    "qwen3": tiny_qwen3,
}


@pytest.fixture(scope="module", params=list(MODELS))
def model_and_ids(request):
    torch.manual_seed(0)
    return MODELS[request.param](), torch.randint(0, 97, (2, 30))


def test_logits_equal_hf_forward(model_and_ids):
    model, ids = model_and_ids
    with torch.no_grad():
        expected = model(ids).logits
    got = HookedModel(model).run_with_hooks(ids)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-5


def test_residual_stream_adds_up(model_and_ids):
    model, ids = model_and_ids
    hooked = HookedModel(model)
    _, cache = hooked.run_with_cache(ids)
    for layer in range(hooked.n_layers):
        p = f"blocks.{layer}."
        total = cache[p + "hook_resid_pre"] + cache[p + "hook_attn_out"] + cache[p + "hook_mlp_out"]
        assert torch.allclose(cache[p + "hook_resid_post"], total, atol=1e-6)
        if layer + 1 < hooked.n_layers:
            assert torch.equal(cache[p + "hook_resid_post"], cache[f"blocks.{layer + 1}.hook_resid_pre"])
    assert torch.equal(cache["hook_embed"], cache["blocks.0.hook_resid_pre"])


def test_head_contributions_sum_to_attn_out(model_and_ids):
    model, ids = model_and_ids
    hooked = HookedModel(model)
    _, cache = hooked.run_with_cache(ids)
    for layer in range(hooked.n_layers):
        for pos in (0, 17, ids.shape[1] - 1):
            heads = hooked.head_contributions(cache, layer, pos)
            assert heads.shape == (2, hooked.n_heads, hooked.cfg.d_model)
            assert (heads.sum(1) - cache[f"blocks.{layer}.hook_attn_out"][:, pos]).abs().max() < 1e-5
            # heads differ: the decomposition is not attn_out / n_heads
            assert (heads[:, 0] - heads[:, 1]).abs().max() > 1e-3


def test_gemma2_features_are_exercised():
    model = tiny_gemma2()
    cfg = HookedModel(model).cfg
    assert cfg.post_norms and cfg.attn_softcap == 50.0 and cfg.final_softcap == 30.0
    assert cfg.sliding_windows == (8, None, 8, None)
    assert cfg.n_kv_heads < cfg.n_heads
    assert cfg.embed_scale == pytest.approx(8.0)


def test_gemma3_and_qwen3_features_are_exercised():
    g3 = HookedModel(tiny_gemma3())
    assert g3.cfg.family == "gemma3" and g3.cfg.qk_norms and g3.cfg.post_norms
    assert g3.cfg.sliding_windows == (8,) * 5 + (None,)
    assert g3.cfg.attn_softcap is None and g3.cfg.final_softcap is None and g3.cfg.embed_scale == pytest.approx(8.0)
    assert g3.cfg.attn_scale == pytest.approx(24 ** -0.5)
    positions, like = torch.arange(5, 9), torch.zeros(1, 4, 64)
    # local and global layers rotate by their own bases (1e4 and 1e6): different angles
    assert not torch.allclose(g3._rope(positions, like, 0)[0], g3._rope(positions, like, 5)[0])
    assert torch.equal(g3._rope(positions, like, 0)[0], g3._rope(positions, like, 4)[0])
    # HF's Gemma-3 ignores an attention softcap in its config (its final softcap applies):
    # test_logits_equal_hf_forward[gemma3_softcaps] holds the hooked model to that
    capped = HookedModel(tiny_gemma3(attn_logit_softcapping=20.0, final_logit_softcapping=15.0)).cfg
    assert capped.attn_softcap is None and capped.final_softcap == 15.0
    q3 = HookedModel(tiny_qwen3())
    assert q3.cfg.family == "qwen3" and q3.cfg.qk_norms and not q3.cfg.post_norms
    assert q3.cfg.sliding_windows == (None, 6, 6)
    # the q/k norms matter: without them the logits change
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(5))
    for hooked in (g3, q3):
        with_norms = hooked.run_with_hooks(ids)
        hooked.cfg = type(hooked.cfg)(**{**hooked.cfg.__dict__, "qk_norms": False})
        assert (hooked.run_with_hooks(ids) - with_norms).abs().max() > 1e-3


def test_sliding_window_limits_what_a_local_layer_sees():
    model = tiny_gemma2()
    hooked = HookedModel(model)
    ids = torch.randint(0, 97, (1, 30))
    changed = ids.clone()
    changed[0, 5] = (ids[0, 5] + 1) % 97  # 24 positions before the last: outside the window of 8
    _, a = hooked.run_with_cache(ids)
    _, b = hooked.run_with_cache(changed)
    # layer 0 is local: its last-position attention output ignores position 5 ...
    assert torch.allclose(a["blocks.0.hook_attn_out"][0, -1], b["blocks.0.hook_attn_out"][0, -1], atol=1e-6)
    # ... layer 1 is global: it does not
    assert not torch.allclose(a["blocks.1.hook_attn_out"][0, -1], b["blocks.1.hook_attn_out"][0, -1], atol=1e-4)


def test_hooks_replace_activations():
    model = tiny_gemma2()
    hooked = HookedModel(model)
    ids = torch.randint(0, 97, (1, 12))
    base = hooked.run_with_hooks(ids)
    same = hooked.run_with_hooks(ids, [("blocks.2.attn.hook_z", lambda z, name: z.clone())])
    assert torch.equal(base, same)
    zeroed = hooked.run_with_hooks(ids, [("blocks.2.attn.hook_z", lambda z, name: torch.zeros_like(z))])
    assert (zeroed - base).abs().max() > 1e-3


def test_every_listed_hook_point_fires_once_per_pass(model_and_ids):
    """hook_names() is exactly the set of hook points a forward pass runs: each listed name
    fires once, with the shape the module doc gives (hook_result and hook_pattern too, which
    run only when hooked), and hooks left in place change no logit."""
    model, ids = model_and_ids
    hooked = HookedModel(model)
    names = hooked.hook_names()
    calls: dict[str, list] = {}
    logits = hooked.run_with_hooks(ids, [(n, lambda t, name: calls.setdefault(name, []).append(t.shape)) for n in names])
    assert sorted(calls) == sorted(names) and all(len(v) == 1 for v in calls.values())
    B, T, c = ids.shape[0], ids.shape[1], hooked.cfg
    assert calls["blocks.0.attn.hook_pattern"] == [(B, c.n_heads, T, T)]
    assert calls["blocks.0.attn.hook_result"] == [(B, T, c.n_heads, c.d_model)]
    assert (("blocks.0.ln1_post.hook_scale" in names) == c.post_norms == c.family.startswith("gemma"))
    assert len(names) == 2 + c.n_layers * (10 + 2 * c.post_norms)
    assert (logits - hooked.run_with_hooks(ids)).abs().max() < 1e-5


@pytest.mark.parametrize("family,name", [
    ("gemma2", "blocks.1.attn.hook_zz"),            # a typo
    ("gemma2", "blocks.4.hook_resid_post"),         # one layer past the last
    ("gemma3", "blocks.0.hook_resid_pre "),         # trailing space
    ("llama", "blocks.0.ln1_post.hook_scale"),      # a Gemma-only post-norm on Llama
    ("qwen3", "blocks.0.ln2_post.hook_scale"),
    ("mistral", "hook_resid_post"),                 # no layer
])
def test_an_unknown_hook_name_raises_and_names_the_valid_ones(family, name):
    hooked = HookedModel(MODELS[family]())
    ids = torch.randint(0, 97, (1, 8))
    for run in (lambda: hooked.run_with_hooks(ids, [(name, lambda t, n: None)]),
                lambda: hooked.forward_from(hooked.embed(ids), 0, {name: [lambda t, n: None]})):
        with pytest.raises(ValueError) as info:
            run()
        message = str(info.value)
        assert "\n" not in message and repr(name) in message and f"in this {hooked.cfg.family} model" in message
        assert f"blocks.{{0..{hooked.n_layers - 1}}}." in message and "hook_resid_post" in message
        assert ("ln1_post.hook_scale" in message.split("valid:")[1]) == hooked.cfg.post_norms


def test_forward_from_cached_residual_matches_full_run():
    model = tiny_gemma2()
    hooked = HookedModel(model)
    ids = torch.randint(0, 97, (1, 20))
    logits, cache = hooked.run_with_cache(ids)
    for layer in range(hooked.n_layers):
        resumed = hooked.forward_from(cache[f"blocks.{layer}.hook_resid_pre"], layer)
        assert torch.equal(resumed, logits)


def test_unsupported_architecture_is_named():
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(UnsupportedArchitecture, match="gpt2"):
        HookedModel(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2)))


@pytest.mark.parametrize("family,T", [("gemma2", 100), ("mistral", 100), ("llama", 600), ("gemma3", 100)])
def test_block_wise_attention_equals_hf_on_long_inputs(family, T):
    """Sequences much longer than the sliding window (or > 512 positions) are attended in
    query blocks that skip masked-out keys: same logits as HF's full masked attention, with
    and without autograd (attribution patching differentiates through it)."""
    extra = {"max_position_embeddings": 1024}
    model = {"gemma2": lambda: _randomize(Gemma2ForCausalLM(Gemma2Config(
                 vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, sliding_window=8, query_pre_attn_scalar=24,
                 attn_implementation="eager", **extra))),
             "mistral": lambda: tiny(MistralConfig, MistralForCausalLM, sliding_window=6),
             "gemma3": lambda: tiny_gemma3(**{**extra}),
             "llama": lambda: _randomize(LlamaForCausalLM(LlamaConfig(
                 vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, attn_implementation="eager", **extra)))}[family]()
    hooked = HookedModel(model)
    window = hooked.cfg.sliding_windows[0]
    assert len(query_blocks(T, 0, window)) > 1  # the blocked path is what is tested
    torch.manual_seed(0)
    ids = torch.randint(0, 97, (1, T))
    with torch.no_grad():
        expected = model(ids).logits
    got = hooked.run_with_hooks(ids)
    assert (got - expected).abs().max().item() < 1e-5
    with torch.enable_grad():
        with_grad = hooked.forward_from(hooked.embed(ids), 0)
    assert (with_grad.detach() - got).abs().max().item() < 1e-5


def test_pruned_last_block_equals_full_last_block():
    """prune_last_block computes the last block at the last position only (keys and values
    everywhere): the decision logits are unchanged from every start layer."""
    hooked = HookedModel(tiny_gemma2())
    torch.manual_seed(0)
    ids = torch.randint(0, 97, (3, 40))
    _, cache = hooked.run_with_cache(ids)
    for layer in range(hooked.n_layers):
        resid = cache[f"blocks.{layer}.hook_resid_pre"]
        full = hooked.forward_from(resid, layer, last_only=True)
        pruned = hooked.forward_from(resid, layer, last_only=True, prune_last_block=True)
        assert pruned.shape == full.shape == (3, 97)
        assert (pruned - full).abs().max().item() < 1e-5


@pytest.mark.parametrize("config,expected", [
    # with layer_types (what current transformers write) ...
    (lambda: tiny_gemma2().config, (8, None, 8, None)),
    (lambda: MistralConfig(num_hidden_layers=3, sliding_window=6), (6, 6, 6)),
    (lambda: LlamaConfig(num_hidden_layers=3), (None, None, None)),
    # ... and without them (configs of transformers versions before layer_types): the pattern
    # those versions attend with
    (lambda: _without_layer_types(tiny_gemma2().config), (8, None, 8, None)),
    (lambda: _without_layer_types(MistralConfig(num_hidden_layers=3, sliding_window=6)), (6, 6, 6)),
    (lambda: _without_layer_types(Qwen2Config(num_hidden_layers=4, sliding_window=5)), (None,) * 4),
    (lambda: _without_layer_types(Qwen2Config(num_hidden_layers=4, sliding_window=5, use_sliding_window=True,
                                              max_window_layers=2)), (None, None, 5, 5)),
])
def test_sliding_windows_per_layer(config, expected):
    from interp_lib.model.hooked import layer_windows

    assert layer_windows(config()) == expected


def _without_layer_types(config):
    config = config.to_dict()
    config.pop("layer_types", None)
    return type("LegacyConfig", (), config)()


def test_gemma2_without_layer_types_still_equals_hf():
    """A Gemma-2 config without layer_types (older transformers) gets the alternating windows:
    the hooked model still equals HF's forward, which attends by its own layer_types."""
    model = tiny_gemma2()
    legacy = HookedModel(model)
    legacy.cfg = type(legacy.cfg).from_config(_without_layer_types(model.config))
    ids = torch.randint(0, 97, (1, 30), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (legacy.run_with_hooks(ids) - model(ids).logits).abs().max().item() < 1e-5
