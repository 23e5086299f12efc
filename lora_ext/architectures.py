"""Architecture table: where each placement component and the classifier head live in a model.

Components are named once (q, k, v, o, up, down; `qkv` where an architecture fuses the three into one module) and
mapped to module paths *inside one transformer layer* for every supported `model_type`, so a placement means the
same thing on RoBERTa, BERT/MiniLM, ELECTRA, DeBERTa-v2/v3, DistilBERT, ModernBERT and decoder classifiers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from record.errors import InputError

COMPONENTS: tuple[str, ...] = ("q", "k", "v", "qkv", "o", "up", "down")  # canonical order of every component
SEPARATE_ATTENTION: tuple[str, ...] = ("q", "k", "v")
FULL_ATTENTION = "full_attention"  # transformers' `layer_types` value of a layer that attends globally


@dataclass(frozen=True)
class Architecture:
    """Module layout of one family of sequence-classification models.

    Attributes:
        name: human name of the family.
        layer_stack: attribute name of the layer list (`layer` in `encoder.layer.3`, `layers` in Llama).
        components: component -> module paths relative to one layer (Llama's `up` is up_proj and gate_proj).
        head: module names of the classification head, trained in full via PEFT's `modules_to_save`.
        num_layers_key: config attribute that holds the number of layers.
        dropout_keys: config attributes set for (hidden, attention, classifier) dropout; () where the family has
            none. Several where the family reads several (DeBERTa's head: `cls_dropout` and `pooler_dropout`).

    `components` holds either q, k, v (separate projections) or qkv (one fused projection, e.g. ModernBERT's
    `attn.Wqkv`), never both: a placement can only adapt the modules a model has.
    """

    name: str
    layer_stack: str
    components: dict[str, tuple[str, ...]]
    head: tuple[str, ...]
    num_layers_key: str = "num_hidden_layers"
    dropout_keys: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = (
        ("hidden_dropout_prob",), ("attention_probs_dropout_prob",), ("classifier_dropout",))

    @property
    def component_names(self) -> tuple[str, ...]:
        """The components this family has, in canonical order (`all` means these)."""
        return tuple(c for c in COMPONENTS if c in self.components)

    def check_component(self, name: str, field_name: str) -> None:
        """One line when a component does not exist here: q/k/v on a fused qkv module, or qkv on separate ones."""
        if name in self.components:
            return
        if name in SEPARATE_ATTENTION and "qkv" in self.components:
            raise InputError(field_name, f"{self.name} fuses q, k and v into one module ({self.components['qkv'][0]}), "
                             f"so {name} alone cannot be adapted", got=name, allowed="qkv (all three together)")
        if name == "qkv" and all(c in self.components for c in SEPARATE_ATTENTION):
            raise InputError(field_name, f"{self.name} has separate q, k and v modules", got=name, allowed="q+k+v")
        raise InputError(field_name, f"no such component in {self.name}", got=name,
                         allowed="any of " + ", ".join(self.component_names))

    def set_dropouts(self, config, hidden: float | None, attention: float | None, classifier: float | None) -> None:
        """Write the spec's dropouts into a transformers config under this family's names (None leaves a default)."""
        for keys, value in zip(self.dropout_keys, (hidden, attention, classifier)):
            for key in keys if value is not None else ():
                setattr(config, key, value)

    def module_regex(self, layers: tuple[int, ...], components: tuple[str, ...]) -> str:
        """Regex that fully matches exactly the selected modules' qualified names (for PEFT `target_modules`)."""
        paths = [p for c in components for p in self.components[c]]
        layer_alt = "|".join(str(i) for i in layers)
        path_alt = "|".join(re.escape(p) for p in paths)
        return rf"(?:.*\.)?{re.escape(self.layer_stack)}\.(?:{layer_alt})\.(?:{path_alt})"

    def component_regex(self, key: str) -> str:
        """Regex for a `rank_pattern` key: one component in any layer (`q`) or in one layer (`q@3`, a budget's),
        anchored at the layer index (for PEFT `rank_pattern`, which matches it at the end of a module's name)."""
        component, _, layer = key.partition("@")
        path_alt = "|".join(re.escape(p) for p in self.components[component])
        index = str(int(layer)) if layer else r"\d+"
        return rf"{re.escape(self.layer_stack)}\.{index}\.(?:{path_alt})"

    def module_key_of(self, name: str, components: tuple[str, ...]) -> str:
        """`q@3`: the component (of `components`) and layer of an adapted module's qualified name."""
        found = re.search(rf"(?:^|\.){re.escape(self.layer_stack)}\.(\d+)\.(.+)$", name)
        if found is None:
            raise ValueError(f"{name} is not in {self.name}'s layer stack `{self.layer_stack}`")
        component = next(c for c in components if found.group(2) in self.components[c])
        return f"{component}@{int(found.group(1))}"


_BERT_LIKE = {
    "q": ("attention.self.query",),
    "k": ("attention.self.key",),
    "v": ("attention.self.value",),
    "o": ("attention.output.dense",),
    "up": ("intermediate.dense",),
    # `output.dense` alone would also suffix-match `attention.output.dense`; the regexes above anchor it
    # right after the layer index, so only the layer's own output projection is adapted.
    "down": ("output.dense",),
}

# Decision on BERT's pooler: RoBERTa's classification head is dense+tanh+out_proj, trained in full. BERT-like
# models put the same dense+tanh in `pooler` (pretrained on NSP, or unused for sentence-transformers' MiniLM),
# so the pooler is part of the trained head here; "classifier only" then means the same thing on both.
ARCHITECTURES: dict[str, Architecture] = {
    "roberta": Architecture("RoBERTa", "layer", _BERT_LIKE, ("classifier",)),
    "xlm-roberta": Architecture("XLM-RoBERTa", "layer", _BERT_LIKE, ("classifier",)),
    "bert": Architecture("BERT (incl. MiniLM)", "layer", _BERT_LIKE, ("pooler", "classifier")),
    # ELECTRA discriminators: BERT's layer layout; the head (dense + out_proj) is one module, `classifier`
    "electra": Architecture("ELECTRA", "layer", _BERT_LIKE, ("classifier",)),
    # ModernBERT: one fused Wqkv, a gated feed-forward whose input projection Wi holds up and gate together; the
    # head is `head` (dense + norm) and `classifier`
    "modernbert": Architecture(
        "ModernBERT",
        "layers",
        {"qkv": ("attn.Wqkv",), "o": ("attn.Wo",), "up": ("mlp.Wi",), "down": ("mlp.Wo",)},
        ("head", "classifier"),
        dropout_keys=(("embedding_dropout", "mlp_dropout"), ("attention_dropout",), ("classifier_dropout",)),
    ),
    "deberta-v2": Architecture(
        "DeBERTa-v2/v3",
        "layer",
        {
            "q": ("attention.self.query_proj",),
            "k": ("attention.self.key_proj",),
            "v": ("attention.self.value_proj",),
            "o": ("attention.output.dense",),
            "up": ("intermediate.dense",),
            "down": ("output.dense",),
        },
        ("pooler", "classifier"),
        # DebertaV2ForSequenceClassification ignores `classifier_dropout`: its head reads these two
        dropout_keys=(("hidden_dropout_prob",), ("attention_probs_dropout_prob",), ("cls_dropout", "pooler_dropout")),
    ),
    "distilbert": Architecture(
        "DistilBERT",
        "layer",
        {
            "q": ("attention.q_lin",),
            "k": ("attention.k_lin",),
            "v": ("attention.v_lin",),
            "o": ("attention.out_lin",),
            "up": ("ffn.lin1",),
            "down": ("ffn.lin2",),
        },
        ("pre_classifier", "classifier"),
        num_layers_key="n_layers",
        dropout_keys=(("dropout",), ("attention_dropout",), ("seq_classif_dropout",)),
    ),
}
_LLAMA = Architecture(
    "Llama-family",
    "layers",
    {
        "q": ("self_attn.q_proj",),
        "k": ("self_attn.k_proj",),
        "v": ("self_attn.v_proj",),
        "o": ("self_attn.o_proj",),
        "up": ("mlp.up_proj", "mlp.gate_proj"),
        "down": ("mlp.down_proj",),
    },
    ("score",),
    dropout_keys=((), ("attention_dropout",), ()),
)
for _llama_type in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"):
    ARCHITECTURES[_llama_type] = _LLAMA


def architecture_for(model_type: str) -> Architecture:
    """The architecture of a model config's `model_type`; a clear InputError for unknown ones."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise InputError(
            "model",
            "unsupported architecture (model_type)",
            got=model_type,
            allowed="known model_types: " + ", ".join(sorted(ARCHITECTURES)),
        ) from None


def num_layers(model_config) -> int:
    """Number of transformer layers of a transformers config."""
    return int(getattr(model_config, architecture_for(model_config.model_type).num_layers_key))


def layer_types(model_config) -> tuple[str, ...] | None:
    """Each layer's attention kind (transformers' `layer_types`: full_attention, sliding_attention, ...) where the
    config says; None where every layer attends globally by construction (BERT, RoBERTa, ...)."""
    kinds = getattr(model_config, "layer_types", None)
    return tuple(kinds) if kinds else None
