"""Model configurations and presets."""
import dataclasses
import json

from kerasllm._io import atomic_write_json
from kerasllm.layers.activations import ACTIVATION_ALIASES, ACTIVATIONS
from kerasllm.layers.attention import attention_type_problem
from kerasllm.layers.embeddings import POSITION_TYPES
from kerasllm.layers.encoder_block import default_initializer
from kerasllm.layers.lora import LORA_TARGETS, lora_arg_problem, normalize_lora_targets

MODEL_TYPES = ("bert", "gpt", "encoder_decoder")


@dataclasses.dataclass
class TransformerConfig:
    """Everything needed to build a kerasllm model.

    Args:
        model_type: ``"bert"`` (encoder), ``"gpt"`` (decoder) or ``"encoder_decoder"``.
        vocab_size: number of tokens.
        hidden_size: model width.
        num_layers: encoder blocks (decoder blocks for ``gpt``).
        num_heads: attention heads; must divide ``hidden_size``.
        intermediate_size: feed-forward width (``4 * hidden_size`` when 0).
        max_position: positions of the learned position table.
        type_vocab_size: segment types (0 disables segment embeddings).
        activation: ``"gelu"`` (exact, erf), ``"gelu_tanh"`` or ``"relu"``.
        dropout: dropout on embeddings and residual branches.
        attention_dropout: dropout on attention probabilities.
        layer_norm_epsilon: epsilon of every layer norm.
        normalize_first: pre-LN (GPT-2, T5) or post-LN (BERT).
        position_embedding: ``"learned"`` or ``"sinusoidal"``.
        initializer_range: stddev of the truncated-normal initializers.
        num_decoder_layers: decoder blocks of an encoder-decoder (``num_layers`` when 0).
        pad_token_id: id of the padding token.
        use_pooler: BERT's tanh pooler over the first token.
        lora_rank: rank of LoRA updates on the projections in ``lora_targets``
            (0 = no LoRA). With LoRA or adapters every base weight is frozen; see
            :func:`kerasllm.models.with_peft`.
        lora_alpha: LoRA scale numerator; updates are scaled by ``alpha / rank``.
        lora_dropout: dropout on the input of the LoRA paths.
        lora_targets: projections that get LoRA, from ``"query"``, ``"key"``,
            ``"value"``, ``"output"`` (attention output) and ``"ffn"`` (both
            feed-forward layers); a list, tuple or comma-separated string.
        adapter_size: bottleneck width of Houlsby adapters after the attention and
            feed-forward sublayers of every block (0 = no adapters).
        freeze_embeddings: freeze the embedding layer.
        freeze_layers: freeze the lowest this many blocks (encoder blocks; decoder
            blocks for ``gpt``).
        attention_type: self-attention pattern of every block: ``"full"``,
            ``"sliding_window"`` (query ``i`` sees keys ``j`` with
            ``|i - j| <= attention_window``, memory ``O(n * attention_window)``) or
            ``"global_local"`` (that window plus ``global_tokens`` leading positions
            that see and are seen by every position, as in Longformer). The weights
            are the same for every type.
        attention_window: keys seen on each side of a query by the local types.
        global_tokens: leading global positions (``"global_local"`` only; e.g. 1
            for ``[CLS]``).
    """

    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 0
    max_position: int = 512
    type_vocab_size: int = 2
    activation: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_epsilon: float = 1e-12
    normalize_first: bool = False
    position_embedding: str = "learned"
    initializer_range: float = 0.02
    num_decoder_layers: int = 0
    pad_token_id: int = 0
    use_pooler: bool = True
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple = ("query", "value")
    adapter_size: int = 0
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    attention_type: str = "full"
    attention_window: int = 256
    global_tokens: int = 0

    def __post_init__(self):
        if isinstance(self.lora_targets, str):
            self.lora_targets = tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())
        elif isinstance(self.lora_targets, list):
            self.lora_targets = tuple(self.lora_targets)
        if not self.intermediate_size:
            self.intermediate_size = 4 * self.hidden_size
        if self.model_type == "encoder_decoder" and not self.num_decoder_layers:
            self.num_decoder_layers = self.num_layers
        self.validate()

    def validate(self):
        """Raise one ``ValueError`` naming the first bad field and what is allowed."""

        def fail(field, value, allowed):
            raise ValueError(f"TransformerConfig.{field}={value!r} is invalid: {allowed}")

        if self.model_type not in MODEL_TYPES:
            fail("model_type", self.model_type, f"allowed values: {list(MODEL_TYPES)}")
        for field in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(field, value, "must be a positive integer")
        for field in ("type_vocab_size", "num_decoder_layers", "pad_token_id"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                fail(field, value, "must be a non-negative integer")
        if self.hidden_size % self.num_heads:
            fail(
                "hidden_size",
                self.hidden_size,
                f"must be divisible by num_heads={self.num_heads} "
                f"(e.g. {self.num_heads * max(1, self.hidden_size // self.num_heads)})",
            )
        for field in ("dropout", "attention_dropout"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                fail(field, value, "must be a number in [0, 1)")
        if self.layer_norm_epsilon <= 0:
            fail("layer_norm_epsilon", self.layer_norm_epsilon, "must be > 0")
        if self.initializer_range <= 0:
            fail("initializer_range", self.initializer_range, "must be > 0")
        if self.activation not in ACTIVATIONS and self.activation not in ACTIVATION_ALIASES:
            fail("activation", self.activation, f"allowed values: {sorted(ACTIVATIONS)}")
        if self.position_embedding not in POSITION_TYPES or self.position_embedding == "none":
            fail("position_embedding", self.position_embedding, "allowed values: ['learned', 'sinusoidal']")
        if self.pad_token_id >= self.vocab_size:
            fail("pad_token_id", self.pad_token_id, f"must be < vocab_size={self.vocab_size}")
        self._validate_peft(fail)
        problem = attention_type_problem(self.attention_type, self.attention_window, self.global_tokens)
        if problem:
            fail(problem[0], getattr(self, problem[0]), problem[1])

    def _validate_peft(self, fail):
        problem = lora_arg_problem(self.lora_rank, self.lora_alpha, self.lora_dropout)
        if problem:
            fail(problem[0], getattr(self, problem[0]), problem[1])
        if not isinstance(self.lora_targets, tuple) or not all(isinstance(t, str) for t in self.lora_targets):
            fail("lora_targets", self.lora_targets, f"must be a list of names from {list(LORA_TARGETS)}")
        try:
            normalize_lora_targets(self.lora_targets)
        except ValueError as err:
            fail("lora_targets", self.lora_targets, str(err).split(": ", 1)[-1])
        if self.lora_rank and not self.lora_targets:
            fail("lora_targets", self.lora_targets, f"lora_rank={self.lora_rank} needs at least one of {list(LORA_TARGETS)}")
        if not isinstance(self.adapter_size, int) or isinstance(self.adapter_size, bool) or self.adapter_size < 0:
            fail("adapter_size", self.adapter_size, "must be an integer >= 0 (0 = no adapters)")
        if not isinstance(self.freeze_embeddings, bool):
            fail("freeze_embeddings", self.freeze_embeddings, "must be true or false")
        value = self.freeze_layers
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= self.num_layers:
            fail("freeze_layers", value, f"must be an integer from 0 to num_layers={self.num_layers}")

    @property
    def head_dim(self):
        return self.hidden_size // self.num_heads

    @property
    def uses_peft(self):
        """True with LoRA or adapters: then only they and the task head train."""
        return bool(self.lora_rank or self.adapter_size)

    def block_args(self):
        """Keyword arguments of :class:`TransformerEncoderBlock` / ``TransformerDecoderBlock`` this config sets.

        Everything but ``name`` (and a decoder's ``cross_attention``): sizes, dropout,
        norm placement, initializer, and the LoRA and adapter settings.
        """
        shared = (
            "num_heads", "intermediate_size", "activation", "dropout", "attention_dropout", "layer_norm_epsilon",
            "normalize_first", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "adapter_size",
            "attention_type", "attention_window", "global_tokens",
        )
        args = {name: getattr(self, name) for name in shared}
        args["kernel_initializer"] = default_initializer(self.initializer_range)
        return args

    def replace(self, **changes):
        """A validated copy with ``changes`` applied."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(
                f"unknown TransformerConfig field(s) {sorted(unknown)}; "
                f"fields: {[f.name for f in dataclasses.fields(self)]}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TransformerConfig field(s) {sorted(unknown)}; fields: {sorted(known)}")
        return cls(**data)

    def save(self, path):
        """Write the config as JSON (atomically)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data)


def _bert(layers, hidden, heads):
    return TransformerConfig(
        model_type="bert", num_layers=layers, hidden_size=hidden, num_heads=heads
    )


def _gpt(layers, hidden, heads, vocab_size=50257, max_position=1024):
    return TransformerConfig(
        model_type="gpt",
        vocab_size=vocab_size,
        num_layers=layers,
        hidden_size=hidden,
        num_heads=heads,
        max_position=max_position,
        type_vocab_size=0,
        activation="gelu_tanh",
        layer_norm_epsilon=1e-5,
        normalize_first=True,
        use_pooler=False,
    )


def _t5_like(layers, hidden, heads, intermediate):
    return TransformerConfig(
        model_type="encoder_decoder",
        vocab_size=32128,
        num_layers=layers,
        num_decoder_layers=layers,
        hidden_size=hidden,
        num_heads=heads,
        intermediate_size=intermediate,
        type_vocab_size=0,
        activation="relu",
        layer_norm_epsilon=1e-6,
        normalize_first=True,
        position_embedding="sinusoidal",
        use_pooler=False,
    )


PRESETS = {
    "bert-tiny": _bert(2, 128, 2),
    "bert-mini": _bert(4, 256, 4),
    "bert-small": _bert(4, 512, 8),
    "bert-medium": _bert(8, 512, 8),
    "bert-base": _bert(12, 768, 12),
    "bert-large": _bert(24, 1024, 16),
    "gpt-tiny": _gpt(4, 256, 4, max_position=512),
    "gpt2": _gpt(12, 768, 12),
    "gpt2-medium": _gpt(24, 1024, 16),
    "t5-tiny": _t5_like(2, 128, 2, 512),
    "t5-small": _t5_like(6, 512, 8, 2048),
    "t5-base": _t5_like(12, 768, 12, 3072),
}
PRESET_DESCRIPTIONS = {
    "bert-tiny": "BERT encoder, 2 layers, hidden 128 (Turc et al. compact BERTs)",
    "bert-mini": "BERT encoder, 4 layers, hidden 256",
    "bert-small": "BERT encoder, 4 layers, hidden 512",
    "bert-medium": "BERT encoder, 8 layers, hidden 512",
    "bert-base": "BERT-base, 12 layers, hidden 768",
    "bert-large": "BERT-large, 24 layers, hidden 1024",
    "gpt-tiny": "GPT-2-style decoder, 4 layers, hidden 256 (set vocab_size to your tokenizer)",
    "gpt2": "GPT-2 small, 12 layers, hidden 768",
    "gpt2-medium": "GPT-2 medium, 24 layers, hidden 1024",
    "t5-tiny": "T5-shaped encoder-decoder (pre-LN, ReLU, sinusoidal positions), 2+2 layers, hidden 128",
    "t5-small": "T5-shaped encoder-decoder, 6+6 layers, hidden 512",
    "t5-base": "T5-shaped encoder-decoder, 12+12 layers, hidden 768",
}


def get_preset(name, **overrides):
    """Return a copy of preset ``name`` with ``overrides`` applied (and validated).

    Example:

    >>> get_preset("gpt-tiny", vocab_size=4000).vocab_size
    4000
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; allowed values: {list(PRESETS)}")
    return PRESETS[name].replace(**overrides)
