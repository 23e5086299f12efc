"""Tiny random configs of every supported architecture (a few thousand parameters; MiniLM's token ids fit)."""

from __future__ import annotations

HEADS = dict(num_attention_heads=2)
ENCODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, **HEADS)
DECODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_key_value_heads=1, head_dim=16,
               pad_token_id=0, **HEADS)
TINY: dict[str, dict] = {
    "bert": ENCODER,
    "roberta": dict(ENCODER, pad_token_id=1),
    "xlm-roberta": dict(ENCODER, pad_token_id=1),
    "electra": dict(ENCODER, embedding_size=16),
    "deberta-v2": dict(ENCODER, relative_attention=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
                       position_buckets=16, norm_rel_ebd="layer_norm", share_att_key=True),  # DeBERTa-v3's layout
    "distilbert": dict(dim=32, hidden_dim=64, n_layers=2, n_heads=2),
    # 4 layers, global attention every 3rd: layer_types full, sliding, sliding, full (ModernBERT-base: 22 layers)
    "modernbert": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, local_attention=16,
                       global_attn_every_n_layers=3, pad_token_id=0, bos_token_id=101, eos_token_id=102,
                       cls_token_id=101, sep_token_id=102, **HEADS),
    "llama": DECODER,
    "qwen2": DECODER,
    "qwen3": DECODER,
    "gemma": DECODER,
    "gemma2": dict(DECODER, num_hidden_layers=4, sliding_window=16),  # alternates local and global layers
}


def tiny_config(model_type: str, vocab_size: int = 30522, **extra):
    """A transformers config of `model_type` with TINY's sizes (2 labels)."""
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, vocab_size=vocab_size, num_labels=2, **{**TINY[model_type], **extra})
