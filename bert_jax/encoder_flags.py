"""The encoder block's architecture flags (config.model): their allowed values and the checks between them.

The 2018 BERT block is the default; ModernBERT, NeoBERT and MosaicBERT are settings of the same flags, not
separate models, so every objective, head, checkpoint path and export works on all of them. Kept apart from
`config.py` so the model and the config read the same rules without importing each other.
"""

from __future__ import annotations

from bert_jax.errors import require as _require

NORM_PLACEMENTS = ("post", "pre")
NORM_KINDS = ("layernorm", "rmsnorm")
FFN_ACTIVATIONS = ("gelu", "geglu", "swiglu")
POSITION_ENCODINGS = ("learned", "rotary", "alibi")
BLOCK_DEFAULTS = {
    "norm_placement": "post", "norm_kind": "layernorm", "final_norm": False, "embedding_norm": True,
    "ffn_activation": "gelu", "position_encoding": "learned", "use_bias": True, "local_attention_window": 0,
    "global_attention_every_n_layers": 1, "tie_word_embeddings": True,
}  # BERT's block; `is_bert_block` compares against it


def is_bert_block(m) -> bool:
    """True when the block is BERT's (what the BERT/ALBERT/RoBERTa/DistilBERT/ELECTRA exports can represent)."""
    return all(getattr(m, name) == value for name, value in BLOCK_DEFAULTS.items())


def is_global_layer(m, index: int) -> bool:
    """Layer `index` (0-based) attends to the whole row; the others to a local window (ModernBERT's rule)."""
    return m.local_attention_window == 0 or index % m.global_attention_every_n_layers == 0


def validate_block(m) -> None:
    """Checks config.model's block flags (m: a ConfigDict or dict-like with attribute access)."""
    choices = (("norm_placement", NORM_PLACEMENTS), ("norm_kind", NORM_KINDS), ("ffn_activation", FFN_ACTIVATIONS),
               ("position_encoding", POSITION_ENCODINGS))
    for name, allowed in choices:
        _require(getattr(m, name) in allowed, f"config.model.{name}={getattr(m, name)!r} is not one of {allowed}.")
    _require(not (m.final_norm and m.norm_placement == "post"),
             "config.model.final_norm=True adds a norm after the last layer of a pre-norm stack, but "
             "config.model.norm_placement is 'post' (each layer already ends in a norm); set "
             "norm_placement='pre' or final_norm=False.")
    _require(0 < m.rope_theta < float("inf"), f"config.model.rope_theta must be positive and finite, got {m.rope_theta}.")
    head_dim = m.hidden_size // max(m.num_attention_heads, 1)
    _require(m.position_encoding != "rotary" or head_dim % 2 == 0,
             f"config.model.position_encoding='rotary' rotates pairs of a head's dimensions, but the heads are "
             f"{head_dim} wide (hidden_size {m.hidden_size} / {m.num_attention_heads} heads); choose a head count "
             "that leaves an even head width.")
    _require(0 <= m.local_rope_theta < float("inf"),
             f"config.model.local_rope_theta must be 0 (= rope_theta) or positive, got {m.local_rope_theta}.")
    _require(m.local_attention_window >= 0 and m.local_attention_window % 2 == 0,
             f"config.model.local_attention_window must be 0 (global attention everywhere) or an even number of "
             f"tokens (a token sees window // 2 on each side), got {m.local_attention_window}.")
    _require(m.global_attention_every_n_layers >= 1,
             f"config.model.global_attention_every_n_layers must be at least 1, got "
             f"{m.global_attention_every_n_layers}.")
    if m.local_attention_window:
        _require(m.num_hidden_groups == 0,
                 "config.model.local_attention_window alternates local and global layers, but ALBERT's sharing "
                 f"(num_hidden_groups={m.num_hidden_groups}) applies one layer throughout; set one of them to 0.")
        _require(not m.scan_layers,
                 "config.model.scan_layers runs one layer program for every depth, but local_attention_window "
                 "makes local and global layers differ; set scan_layers=False.")
    _require(not (m.position_encoding == "alibi" and m.attention_impl == "splash"),
             "config.model.position_encoding='alibi' adds a bias the splash kernel does not take; use "
             "attention_impl='dot_product' or 'xla'.")
