"""Token, position and segment embeddings, reversible into a tied LM head."""
import math

import tensorflow as tf
import tf_keras as keras

from kerasllm.layers._utils import build_sublayer
from kerasllm.layers.dropout import Dropout
from kerasllm.layers.layer_norm import LayerNorm

POSITION_TYPES = ("learned", "sinusoidal", "none")


def gather_dense_grad(table, ids):
    """``tf.gather(table, ids)`` whose gradient for ``table`` is a dense tensor, not ``IndexedSlices``.

    A gather's gradient is normally ``IndexedSlices`` (one row per looked-up id).
    When the same table also gets a dense gradient (a tied LM head, ``hidden @
    table^T``), TensorFlow aggregates the two by turning the dense one into
    ``IndexedSlices`` of every row and concatenating, so the optimizer then
    scatters ``vocab + batch * length`` rows into its slots on every step. Here
    the rows are summed into a dense ``[vocab, width]`` gradient at once
    (``unsorted_segment_sum``), which adds to the head's gradient as one tensor.

    Args:
        table: ``[vocab, width]`` tensor (read the variable with ``tf.convert_to_tensor``).
        ids: integer ids of any shape.

    Returns:
        ``[*ids.shape, width]``, the same values as ``tf.gather(table, ids)``.

    Example:

    >>> table = tf.Variable(tf.ones([5, 2]))
    >>> with tf.GradientTape() as tape:
    ...     rows = gather_dense_grad(tf.convert_to_tensor(table), tf.constant([[1, 1, 3]]))
    >>> tape.gradient(rows, table).numpy()[:, 0].tolist()
    [0.0, 2.0, 0.0, 1.0, 0.0]
    """

    @tf.custom_gradient
    def gather(table):
        def grad(upstream):
            width = tf.shape(upstream)[-1]
            rows = tf.reshape(upstream, [-1, width])
            return tf.math.unsorted_segment_sum(rows, tf.reshape(ids, [-1]), tf.shape(table)[0])

        return tf.gather(table, ids), grad

    return gather(table)


def sinusoidal_positions(positions, dim, dtype=tf.float32):
    """Vaswani et al. encodings ``[..., dim]``: ``sin(p / 10000^(2i/dim))`` half, then the cos half."""
    half = dim // 2
    inv_freq = tf.exp(tf.range(half, dtype=tf.float32) * (-2.0 * math.log(10000.0) / dim))
    angles = tf.cast(positions, tf.float32)[..., None] * inv_freq
    enc = tf.concat([tf.sin(angles), tf.cos(angles)], axis=-1)
    if dim % 2:
        enc = tf.pad(enc, [[0, 0]] * (enc.shape.rank - 1) + [[0, 1]])
    return tf.cast(enc, dtype)


@keras.saving.register_keras_serializable(package="kerasllm")
class TransformerEmbedding(keras.layers.Layer):
    """Token + position (+ segment) embeddings with optional layer norm and dropout.

    BERT: learned positions, ``type_vocab_size=2``, ``use_layer_norm=True``.
    GPT-2: learned positions, no segments, no layer norm. Called with
    ``reverse=True`` on hidden states it returns vocabulary logits through the
    transposed token embedding (weight tying).

    Args:
        vocab_size: number of tokens.
        hidden_size: embedding width.
        max_position: largest number of positions (learned positions only).
        type_vocab_size: number of segment types; 0 disables segment embeddings.
        position_embedding: ``"learned"``, ``"sinusoidal"`` or ``"none"``.
        use_layer_norm: apply layer normalization after the sum.
        layer_norm_epsilon: epsilon of that layer norm.
        dropout: dropout rate after the sum (and norm).
        initializer_range: stddev of the truncated-normal initializer.

    Call arguments:
        inputs: int token ids ``[batch, seq]`` or, with ``reverse=True``, hidden
            states ``[batch, seq, hidden]``.
        token_type_ids: segment ids ``[batch, seq]`` (zeros when omitted).
        position_ids: explicit positions ``[batch, seq]`` (left-padded generation).
        position_offset: scalar added to ``0..seq-1`` when ``position_ids`` is omitted
            (the cache index when decoding step by step).
        reverse: map hidden states to logits ``hidden @ token_embeddings^T``.
        training: enables dropout.

    Example:

    >>> import numpy as np
    >>> emb = TransformerEmbedding(vocab_size=100, hidden_size=16, max_position=32,
    ...                            type_vocab_size=2)
    >>> h = emb(np.array([[5, 6, 7]]))
    >>> emb(h, reverse=True).shape
    TensorShape([1, 3, 100])
    """

    def __init__(
        self,
        vocab_size,
        hidden_size,
        max_position=512,
        type_vocab_size=0,
        position_embedding="learned",
        use_layer_norm=True,
        layer_norm_epsilon=1e-12,
        dropout=0.0,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if position_embedding not in POSITION_TYPES:
            raise ValueError(
                f"position_embedding={position_embedding!r}; allowed values: {POSITION_TYPES}"
            )
        self.vocab_size = int(vocab_size)
        self.hidden_size = int(hidden_size)
        self.max_position = int(max_position)
        self.type_vocab_size = int(type_vocab_size)
        self.position_embedding = position_embedding
        self.use_layer_norm = use_layer_norm
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = float(dropout)
        self.initializer_range = initializer_range
        self._dropout_layer = Dropout(self.dropout)
        self._dense_token_gradient = False  # opt-in: see gather_dense_grad

    def build(self, input_shape):
        def init():
            return keras.initializers.TruncatedNormal(stddev=self.initializer_range)

        d = self.hidden_size
        self.token_embeddings = self.add_weight(
            name="token_embeddings", shape=[self.vocab_size, d], initializer=init()
        )
        self.position_embeddings = None
        if self.position_embedding == "learned":
            self.position_embeddings = self.add_weight(
                name="position_embeddings", shape=[self.max_position, d], initializer=init()
            )
        self.token_type_embeddings = None
        if self.type_vocab_size:
            self.token_type_embeddings = self.add_weight(
                name="token_type_embeddings", shape=[self.type_vocab_size, d], initializer=init()
            )
        self.layer_norm = None
        if self.use_layer_norm:
            self.layer_norm = LayerNorm(
                epsilon=self.layer_norm_epsilon, name="layer_norm", dtype=self.dtype_policy
            )
            build_sublayer(self.layer_norm, [None, None, d])
        super().build(input_shape)

    def call(
        self,
        inputs,
        token_type_ids=None,
        position_ids=None,
        position_offset=None,
        reverse=False,
        training=None,
    ):
        if reverse:
            hidden = tf.cast(inputs, self.compute_dtype)
            table = tf.cast(self.token_embeddings, self.compute_dtype)
            return tf.matmul(hidden, table, transpose_b=True)

        ids = tf.cast(inputs, tf.int32)
        seq_len = ids.shape[1]
        if (
            self.position_embedding == "learned"
            and seq_len is not None
            and position_ids is None
            and position_offset is None
            and seq_len > self.max_position
        ):
            raise ValueError(
                f"sequence length {seq_len} exceeds max_position={self.max_position} of "
                f"layer {self.name!r}; truncate or split the input (e.g. --max-length)"
            )
        if self._dense_token_gradient:
            x = gather_dense_grad(tf.convert_to_tensor(self.token_embeddings), ids)
        else:
            x = tf.gather(self.token_embeddings, ids)
        if self.position_embedding != "none":
            if position_ids is None:
                position_ids = tf.range(tf.shape(ids)[1])[None, :]
                if position_offset is not None:
                    position_ids = position_ids + tf.cast(position_offset, tf.int32)
            position_ids = tf.cast(position_ids, tf.int32)
            if self.position_embedding == "learned":
                x = x + tf.gather(self.position_embeddings, position_ids)
            else:
                x = x + sinusoidal_positions(position_ids, self.hidden_size, x.dtype)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                x = x + self.token_type_embeddings[0]
            else:
                x = x + tf.gather(self.token_type_embeddings, tf.cast(token_type_ids, tf.int32))
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self._dropout_layer(x, training=training)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape).concatenate([self.hidden_size])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size,
                "max_position": self.max_position,
                "type_vocab_size": self.type_vocab_size,
                "position_embedding": self.position_embedding,
                "use_layer_norm": self.use_layer_norm,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "dropout": self.dropout,
                "initializer_range": self.initializer_range,
            }
        )
        return config
