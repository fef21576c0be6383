"""The model layer: what each architecture is (`architecture`), the hooked model that runs it
(`hooked`, the one place that knows the architectures), loading weights at a precision
(`loading`, `native_decoder`, `precision`, `loader`), tokens and the decision input (`tokens`),
LoRA updates from their factors (`adapter_deltas`), batched last-position logits over a prompt
trie (`prefix_tree`), GGUF conversion (`gguf_convert`) and the GPU row budget (`gpu_rows`).
Importing the package imports nothing."""
