"""Settings of ``kerasllm pretrain mlm|clm``, as dataclasses (no TensorFlow import).

:class:`PretrainConfig` subclasses :class:`~kerasllm.training.FinetuneConfig`
for what every training run shares (output folder, batch, learning rate and
warm-up, AdamW weight decay, seed, dropout, mixed precision, XLA, resume, the
``tf.distribute`` strategy) and adds the corpus, the vocabulary, the preset,
the step budget and the time budget. :class:`MlmPretrainConfig` and
:class:`ClmPretrainConfig` set each objective's defaults.
"""
import dataclasses
import os

from kerasllm.training.finetune_config import FinetuneConfig, _option

# FinetuneConfig fields that mean nothing to pretraining: left out of the CLI and of pretrain_config.json.
FINETUNE_ONLY = (
    "train", "dev", "test", "model", "epochs", "max_length", "patience", "vocab_size", "lowercase",
    "export", "quantize", "static_shapes", "lora_rank", "lora_alpha", "lora_targets", "adapter_size", "freeze_embeddings",
    "freeze_layers",
)


@dataclasses.dataclass
class PretrainConfig(FinetuneConfig):
    """Settings of one pretraining run (the CLI options, with the same defaults).

    Args:
        corpus: text files: a path, a glob, or a comma list (:class:`kerasllm.data.TextCorpus`).
        vocab: a tokenizer folder: ``vocab.txt`` (WordPiece, for ``mlm``) or
            ``vocab.json`` + ``merges.txt`` (byte-level BPE, for ``clm``), as
            ``kerasllm vocab`` writes them.
        preset: the model preset, trained from scratch (its ``vocab_size`` is
            the tokenizer's, its ``max_position`` is ``seq_length``).
        steps: optimizer steps (the learning rate warms up over
            ``warmup_ratio * steps`` and decays linearly to 0 at ``steps``).
        max_minutes: stop training after this many minutes (then save and
            evaluate as usual); None: no time limit.
        seq_length: tokens per sequence (``clm``: the block size).
        eval_every: steps between held-out evaluations (and backups to resume from).
        documents: how files are cut into documents: ``blank-line``, ``file`` or
            ``line`` (checked by :class:`kerasllm.data.TextCorpus`).
        validation_every: every k-th document is held out for evaluation.

    The other fields (``out``, ``batch_size``, ``lr``, ``warmup_ratio``,
    ``weight_decay``, ``seed``, ``dropout``, ``mixed_precision``, ``xla``,
    ``resume``, ``strategy``, ``devices``, ``tpu``) are those of
    :class:`~kerasllm.training.FinetuneConfig`; its fine-tuning fields
    (:data:`FINETUNE_ONLY`) are not used.
    """

    objective = None  # "mlm" or "clm", set by the subclasses
    corpus: str = None
    vocab: str = None
    preset: str = None
    steps: int = 2000
    max_minutes: float = None
    seq_length: int = 128
    eval_every: int = 200
    documents: str = "blank-line"
    validation_every: int = 10
    lr: float = 1e-3
    warmup_ratio: float = 0.05
    # One "epoch" of `steps` updates, so the fine-tuning compile_model schedules the learning rate over `steps`.
    epochs: int = 1

    def validate(self):
        """Raise ``ValueError`` / ``FileNotFoundError`` naming the first bad option."""
        super().validate()
        for name in ("corpus", "vocab"):
            if getattr(self, name) is None:
                raise ValueError(
                    f"{_option(name)} is required"
                    + (" (build one with: kerasllm vocab wordpiece|bpe --corpus ... --out DIR)" if name == "vocab" else "")
                )
        if self.vocab is not None and not os.path.isdir(self.vocab):
            raise FileNotFoundError(f"--vocab {self.vocab}: no such folder")
        for name in ("steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{_option(name)} must be >= 1, got {getattr(self, name)}")
        if self.seq_length < 8:
            raise ValueError(f"--seq-length must be >= 8, got {self.seq_length}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"--max-minutes must be > 0, got {self.max_minutes}")
        if self.validation_every < 2:
            raise ValueError(
                f"--validation-every must be >= 2 (every k-th document is held out), got {self.validation_every}"
            )

    def to_dict(self):
        """The pretraining settings as a JSON-ready dict (what ``OUT/pretrain_config.json`` holds)."""
        settings = {k: v for k, v in super().to_dict().items() if k not in FINETUNE_ONLY}
        return {"objective": self.objective, **settings}


@dataclasses.dataclass
class MlmPretrainConfig(PretrainConfig):
    """Settings of ``kerasllm pretrain mlm`` (BERT: masked LM, optionally next-sentence prediction).

    Args:
        nsp: next-sentence prediction: ``[CLS] A [SEP] B [SEP]`` pairs packed
            within a document; without it, sequences are packed across
            documents to the full length.
        whole_word: mask whole words (all WordPiece pieces of a word together).
        mask_rate: share of tokens selected for prediction (80% of them become
            ``[MASK]``, 10% a random token, 10% stay).

    The other fields are those of :class:`PretrainConfig`.
    """

    objective = "mlm"
    preset: str = "bert-tiny"
    out: str = os.path.join("saved_models", "pretrain-mlm")
    nsp: bool = True
    whole_word: bool = False
    mask_rate: float = 0.15

    def validate(self):
        super().validate()
        if not 0 < self.mask_rate < 1:
            raise ValueError(f"--mask-rate must be in (0, 1), got {self.mask_rate}")


@dataclasses.dataclass
class ClmPretrainConfig(PretrainConfig):
    """Settings of ``kerasllm pretrain clm`` (GPT: next-token prediction on packed blocks).

    The fields are those of :class:`PretrainConfig`.
    """

    objective = "clm"
    preset: str = "gpt-tiny"
    out: str = os.path.join("saved_models", "pretrain-clm")
