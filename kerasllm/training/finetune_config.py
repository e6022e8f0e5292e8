"""Settings of the fine-tuning commands, as dataclasses (no TensorFlow import).

:class:`FinetuneConfig` holds what every task shares (data files, model,
optimizer, export, ``tf.distribute`` strategy, parameter-efficient fine-tuning);
:class:`NerFinetuneConfig` and :class:`ClassifyFinetuneConfig` add their own
fields and defaults. ``kerasllm finetune ner|classify`` builds one option per
field, with the field's default, so the command line and the Python API
cannot drift apart.
"""
import dataclasses
import os

STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")
QUANTIZE = ("none", "float16", "dynamic", "int8")
MIXED_PRECISION = ("auto", "none", "float16", "bfloat16")
FUSE_ELEMENTWISE = ("auto", "on", "off")
CLASSIFY_SELECT = ("accuracy", "macro_f1")


def split_list(value):
    """``"a, b"`` or ``["a", "b"]`` -> ``["a", "b"]``; None stays None.

    Example:
        >>> split_list("/cpu:0, /cpu:1"), split_list(None)
        (['/cpu:0', '/cpu:1'], None)
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    return [str(v).strip() for v in value if str(v).strip()]


def _option(name):
    return "--" + name.replace("_", "-")


@dataclasses.dataclass
class FinetuneConfig:
    """Settings every fine-tuning task shares (the CLI options, with the same defaults).

    Args:
        train, dev, test: data files; without ``train`` the task's embedded
            corpus is written to ``OUT/data`` and used.
        model: a preset (from scratch, WordPiece vocabulary trained on ``train``)
            or a model folder (kerasllm, Hugging Face BERT, Google BERT).
        out: output folder.
        epochs, batch_size, lr, warmup_ratio, weight_decay: ``model.fit`` with
            AdamW and linear warm-up then decay; ``batch_size`` is the global
            batch, split over the strategy's replicas.
        max_length: sub-words per model input, special tokens included.
        seed: initialisation, shuffling and the embedded corpus.
        patience: early stopping on the dev metric.
        vocab_size, lowercase: the WordPiece vocabulary trained for a preset.
        export, quantize: export the best model to TFLite and verify it.
        mixed_precision, xla, fuse_elementwise: speed options;
            ``mixed_precision="auto"`` is bfloat16 on a TPU and, without ``xla``,
            on a CPU with AMX for a model of hidden size >= 256, none elsewhere;
            ``fuse_elementwise="auto"`` compiles the ops between matrix products
            with XLA when training so in bfloat16 (:mod:`kerasllm.training.fusion`).
        lazy_embedding_updates: AdamW moves only the embedding rows a batch
            looked up (:func:`kerasllm.training.create_optimizer`'s
            ``lazy_sparse_updates``).
        static_shapes: pad every batch to ``[batch_size, max_length]`` (the
            partial batch with rows that do not count), as TPUs and XLA want
            (:func:`kerasllm.training.static_shapes.static_batches`); always on
            on a TPU.
        steps_per_execution: training steps per ``tf.function`` call; 0 means
            32 on a TPU (at most one epoch) and 1 elsewhere.
        resume: continue an interrupted run from ``OUT/backup``.
        strategy, devices, tpu: the ``tf.distribute`` strategy
            (:func:`kerasllm.training.strategy`); ``devices`` is a comma list.
        worker_hosts, task_index: the multi-worker cluster (every worker's
            ``host:port``, comma-separated, and this worker's index; worker 0
            is the chief), written to ``TF_CONFIG`` when it is not set.
        lora_rank, lora_alpha, lora_targets, adapter_size, freeze_embeddings,
            freeze_layers: parameter-efficient fine-tuning
            (:func:`kerasllm.models.peft.with_peft`); ``lora_targets`` is a comma list.
        dropout: replaces the model's dropout rates (hidden and attention
            probabilities) for this fine-tune; None keeps the model's. 0 makes a
            seeded run exactly repeatable, including across ``--resume``.
    """

    train: str = None
    dev: str = None
    test: str = None
    model: str = "bert-tiny"
    out: str = os.path.join("saved_models", "finetune")
    epochs: int = 12
    batch_size: int = 32
    lr: float = 5e-4
    max_length: int = 128
    seed: int = 0
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    patience: int = 3
    vocab_size: int = 1000
    lowercase: bool = False
    export: bool = True
    quantize: str = "dynamic"
    mixed_precision: str = "auto"
    xla: bool = False
    fuse_elementwise: str = "auto"
    lazy_embedding_updates: bool = False
    static_shapes: bool = False
    steps_per_execution: int = 0
    resume: bool = False
    strategy: str = "default"
    devices: str = None
    tpu: str = None
    worker_hosts: str = None
    task_index: int = None
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: str = "query,value"
    adapter_size: int = 0
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    dropout: float = None

    @property
    def peft(self):
        """True when any parameter-efficient option is on."""
        return bool(self.lora_rank or self.adapter_size or self.freeze_embeddings or self.freeze_layers)

    def validate(self):
        """Raise ``ValueError`` / ``FileNotFoundError`` naming the first bad option."""
        for name in ("epochs", "batch_size", "max_length", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{_option(name)} must be >= 1, got {getattr(self, name)}")
        for name in ("patience", "lora_rank", "adapter_size", "freeze_layers", "weight_decay", "steps_per_execution"):
            if getattr(self, name) < 0:
                raise ValueError(f"{_option(name)} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"--warmup-ratio must be between 0 and 1, got {self.warmup_ratio}")
        if self.lora_rank and self.lora_alpha <= 0:
            raise ValueError(f"--lora-alpha must be > 0, got {self.lora_alpha}")
        if self.lora_rank and not split_list(self.lora_targets):
            raise ValueError("--lora-targets is empty; name the projections LoRA adapts, e.g. query,value")
        for name, allowed in (
            ("quantize", QUANTIZE),
            ("mixed_precision", MIXED_PRECISION),
            ("fuse_elementwise", FUSE_ELEMENTWISE),
            ("strategy", STRATEGIES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{_option(name)} {getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        if self.devices is not None and self.strategy not in ("mirrored", "auto"):
            raise ValueError(f"--devices applies to --strategy mirrored only, not {self.strategy!r}")
        if self.tpu is not None and self.strategy not in ("tpu", "auto"):
            raise ValueError(f"--tpu applies to --strategy tpu (or auto) only, not {self.strategy!r}")
        cluster = self.worker_hosts is not None or self.task_index is not None
        if cluster and self.strategy not in ("multiworker", "auto"):
            raise ValueError(
                f"--worker-hosts/--task-index apply to --strategy multiworker (or auto), not {self.strategy!r}"
            )
        if self.train is None and (self.dev or self.test):
            raise ValueError("--dev/--test need --train (without --train the embedded corpus is used)")
        for name in ("train", "dev", "test"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(f"--{name} {path}: no such file")

    def to_dict(self):
        """The settings as a JSON-ready dict (what ``OUT/finetune_config.json`` holds)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class NerFinetuneConfig(FinetuneConfig):
    """Settings of one NER fine-tuning run (``kerasllm finetune ner``).

    Args:
        stride: sub-words shared by consecutive windows of a long sentence
            (default: a quarter of the window).
        augment: mention-replacement probability for training sentences;
            None: 0.5 on the embedded corpus, else 0.

    The other fields are those of :class:`FinetuneConfig`.
    """

    out: str = os.path.join("saved_models", "ner-default")
    stride: int = None
    augment: float = None


@dataclasses.dataclass
class ClassifyFinetuneConfig(FinetuneConfig):
    """Settings of one text-classification fine-tuning run (``kerasllm finetune classify``).

    Args:
        text_column, label_column: columns (JSONL keys) of the text and the label.
        text_pair_column: column of a second text (pair tasks such as NLI),
            encoded ``[CLS] a [SEP] b [SEP]`` with segment ids 0 then 1; None
            for single texts.
        select: dev metric for the best checkpoint and early stopping:
            ``accuracy`` or ``macro_f1``.

    The other fields are those of :class:`FinetuneConfig`.
    """

    out: str = os.path.join("saved_models", "classify-default")
    epochs: int = 8
    text_column: str = "text"
    label_column: str = "label"
    text_pair_column: str = None
    select: str = "accuracy"

    def validate(self):
        super().validate()
        if self.select not in CLASSIFY_SELECT:
            raise ValueError(f"--select {self.select!r}: choose one of {', '.join(CLASSIFY_SELECT)}")
        columns = [self.text_column, self.label_column, self.text_pair_column]
        columns = [c for c in columns if c is not None]
        if len(set(columns)) != len(columns):
            raise ValueError(f"--text-column, --label-column and --text-pair-column must differ, got {columns}")
