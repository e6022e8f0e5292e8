"""LoRA: the trainable low-rank update of a frozen projection."""
import tensorflow as tf
import tf_keras as keras

from kerasllm.layers._utils import clone_initializer
from kerasllm.layers.dropout import Dropout

# Projections LoRA can adapt: the attention's query/key/value/output projections, and
# "ffn" for both dense layers of the feed-forward network.
LORA_TARGETS = ("query", "key", "value", "output", "ffn")
ATTENTION_TARGETS = ("query", "key", "value", "output")


def normalize_lora_targets(targets, allowed=LORA_TARGETS, where="lora_targets"):
    """``targets`` (a list, tuple or comma-separated string) as a tuple, checked against ``allowed``.

    Example:

    >>> normalize_lora_targets("query, value")
    ('query', 'value')
    """
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    targets = tuple(targets or ())
    for target in targets:
        if target not in allowed:
            raise ValueError(f"{where}: unknown LoRA target {target!r}; allowed values: {list(allowed)}")
    if len(set(targets)) != len(targets):
        raise ValueError(f"{where}: LoRA targets {list(targets)} name a projection twice")
    return targets


def lora_arg_problem(rank, alpha, dropout):
    """``(argument, what is allowed)`` for the first bad LoRA argument, or ``None``."""
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
        return "lora_rank", "must be an integer >= 0 (0 = no LoRA)"
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        return "lora_alpha", "must be a number > 0 (the update is scaled by alpha / rank)"
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
        return "lora_dropout", "must be a number in [0, 1)"
    return None


def check_lora_args(rank, alpha, dropout, where="LoRA"):
    """Raise a ``ValueError`` naming the argument when rank, alpha or dropout is out of range."""
    problem = lora_arg_problem(rank, alpha, dropout)
    if problem:
        name, allowed = problem
        value = {"lora_rank": rank, "lora_alpha": alpha, "lora_dropout": dropout}[name]
        raise ValueError(f"{where}: {name}={value!r} is invalid: {allowed}")


def default_lora_initializer():
    """Uniform in ``+-1/sqrt(fan_in)`` for ``lora_a`` (the Kaiming-uniform default of LoRA's reference code)."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


@keras.saving.register_keras_serializable(package="kerasllm")
class LoRA(keras.layers.Layer):
    """The low-rank update of a frozen dense projection (Hu et al., 2021).

    Computes ``dropout(x) @ lora_a @ lora_b * alpha / rank``, to be added to the
    output of a frozen projection ``x @ W``: together they compute
    ``x @ (W + alpha / rank * lora_a @ lora_b)``. ``lora_a`` ``[in, rank]`` starts
    random and ``lora_b`` ``[rank, output_dim]`` starts at zero, so a fresh LoRA
    adds exactly nothing. :meth:`delta_kernel` is the update as a kernel, for
    folding into ``W`` (:func:`kerasllm.models.merge_peft`).

    :class:`MultiHeadAttention` and :class:`FeedForward` create these as sublayers
    (``query_lora``, ``value_lora``, ``intermediate_lora``, ...) when given a
    ``lora_rank``.

    Args:
        rank: the rank ``r`` of the update (>= 1).
        output_dim: width of the adapted projection's output.
        alpha: scale numerator; the update is multiplied by ``alpha / rank``.
        dropout: dropout on the input of the low-rank path.
        kernel_initializer: initializer of ``lora_a`` (default: uniform in
            ``+-1/sqrt(in)``).

    Call arguments:
        x: ``[..., in]``.
        training: enables dropout.

    Example:

    >>> import numpy as np
    >>> lora = LoRA(rank=2, output_dim=6, alpha=4.0)
    >>> x = np.ones((1, 3, 8), "float32")
    >>> lora(x).shape, float(np.abs(lora(x)).max())  # lora_b starts at zero
    (TensorShape([1, 3, 6]), 0.0)
    >>> lora.delta_kernel().shape
    TensorShape([8, 6])

    References:
        Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", 2021.
    """

    def __init__(self, rank, output_dim, alpha=16.0, dropout=0.0, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        check_lora_args(rank, alpha, dropout, where=f"LoRA {self.name!r}")
        if rank < 1:
            raise ValueError(f"LoRA {self.name!r}: rank must be >= 1, got {rank}")
        self.rank = int(rank)
        self.output_dim = int(output_dim)
        self.alpha = float(alpha)
        self.dropout = float(dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer or default_lora_initializer())
        self._dropout_layer = Dropout(self.dropout)

    @property
    def scale(self):
        return self.alpha / self.rank

    def build(self, input_shape):
        self.lora_a = self.add_weight(
            name="lora_a",
            shape=[int(input_shape[-1]), self.rank],
            initializer=clone_initializer(self.kernel_initializer),
        )
        self.lora_b = self.add_weight(name="lora_b", shape=[self.rank, self.output_dim], initializer="zeros")
        super().build(input_shape)

    def call(self, x, training=None):
        x = self._dropout_layer(x, training=training)
        low = tf.tensordot(x, self.lora_a, [[x.shape.rank - 1], [0]])
        out = tf.tensordot(low, self.lora_b, [[low.shape.rank - 1], [0]])
        return out * tf.cast(self.scale, out.dtype)

    def delta_kernel(self):
        """``alpha / rank * lora_a @ lora_b``, shape ``[in, output_dim]`` (float32)."""
        return tf.matmul(self.lora_a, self.lora_b) * self.scale

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "rank": self.rank,
                "output_dim": self.output_dim,
                "alpha": self.alpha,
                "dropout": self.dropout,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
