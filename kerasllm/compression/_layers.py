"""Where the compressible weights of kerasllm's layers live (one table for pruning, QAT and reports).

kerasllm models are flat functional graphs whose top-level layers are
:class:`TransformerEmbedding`, :class:`TransformerEncoderBlock` /
:class:`TransformerDecoderBlock` and plain ``Dense`` heads. TF-MOT wraps
top-level layers only, so the weights of a block's attention and feed-forward
sublayers are addressed by attribute paths from the top-level layer
(``"attention.qkv_kernel"``, ``"ffn.intermediate.kernel"``). :func:`projection_paths`
gives those paths for any layer; :func:`resolve` / :func:`assign` read and replace
the attribute a path names.
"""
import tf_keras as keras

ATTENTION_KERNELS = ("qkv_kernel", "query_kernel", "kv_kernel", "output_kernel")
EMBEDDING_TABLES = ("token_embeddings", "position_embeddings", "token_type_embeddings")


def resolve(layer, path):
    """The object at dotted attribute ``path`` below ``layer``."""
    obj = layer
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def assign(layer, path, value, track=True):
    """Set the attribute at dotted ``path`` below ``layer`` to ``value``.

    ``track=False`` bypasses Keras's attribute tracking: the layer keeps listing the
    variable the attribute held (QAT swaps a fake-quantized tensor in for each call
    without the layer forgetting its weights).
    """
    parent, _, name = path.rpartition(".")
    owner = resolve(layer, parent) if parent else layer
    if track:
        setattr(owner, name, value)
    else:
        object.__setattr__(owner, name, value)


def _dense_paths(dense, prefix):
    from kerasllm.compression.lowrank import LowRankDense

    if isinstance(dense, LowRankDense):
        return [f"{prefix}down.kernel", f"{prefix}up.kernel"]
    if isinstance(dense, keras.layers.Dense):
        return [f"{prefix}kernel"]
    return []


def _attention_paths(attention, prefix):
    return [f"{prefix}{name}" for name in ATTENTION_KERNELS if getattr(attention, name, None) is not None]


def _feed_forward_paths(ffn, prefix):
    return _dense_paths(ffn.intermediate, f"{prefix}intermediate.") + _dense_paths(
        ffn.output_dense, f"{prefix}output_dense."
    )


def projection_paths(layer, include_embeddings=False, include_heads=True):
    """Attribute paths of the projection kernels of ``layer`` (a built top-level layer).

    Attention projections (fused ``qkv_kernel``, cross-attention ``query_kernel`` /
    ``kv_kernel``, ``output_kernel``), feed-forward kernels (``Dense`` or
    :class:`LowRankDense`), the pooler's and plain ``Dense`` heads' kernels
    (``include_heads``) and, with ``include_embeddings``, the embedding tables
    (the token table only: position and segment tables are tiny).
    Any other layer has none.
    """
    from kerasllm.layers import FeedForward, MultiHeadAttention, TransformerEmbedding
    from kerasllm.compression.lowrank import LowRankDense
    from kerasllm.models.heads import Pooler

    if not layer.built:
        return []
    if isinstance(layer, MultiHeadAttention):
        return _attention_paths(layer, "")
    if isinstance(layer, FeedForward):
        return _feed_forward_paths(layer, "")
    if isinstance(layer, TransformerEmbedding):
        return ["token_embeddings"] if include_embeddings else []
    if isinstance(layer, Pooler):
        return ["dense.kernel"] if include_heads else []
    if isinstance(layer, (keras.layers.Dense, LowRankDense)):
        return _dense_paths(layer, "") if include_heads else []
    paths = []
    for name in ("attention", "cross_attention"):
        sub = getattr(layer, name, None)
        if isinstance(sub, MultiHeadAttention):
            paths += _attention_paths(sub, f"{name}.")
    ffn = getattr(layer, "ffn", None)
    if isinstance(ffn, FeedForward):
        paths += _feed_forward_paths(ffn, "ffn.")
    return paths


def display_name(layer, path):
    """``encoder_layer_0/attention/qkv_kernel``: a weight named by layer and path."""
    return f"{layer.name}/{path.replace('.', '/')}"


def unwrap(layer):
    """The layer inside TF-MOT pruning/quantization wrappers (itself if unwrapped)."""
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


def copy_model_attributes(source, target):
    """Carry kerasllm's ``kerasllm_config``/``kerasllm_task`` over to a rebuilt model."""
    for name in ("kerasllm_config", "kerasllm_task"):
        if hasattr(source, name):
            setattr(target, name, getattr(source, name))
    return target
