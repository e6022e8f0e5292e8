"""GPT-style decoder with a tied LM head, and its cached forward pass for generation.

Layer names: ``embeddings``, ``decoder_layer_{i}``, ``final_norm``, ``logits``.
"""
import tensorflow as tf
import tf_keras as keras

from kerasllm.layers import LayerNorm, TransformerDecoderBlock, TransformerEmbedding
from kerasllm.models.heads import float32_logits, token_ids_input
from kerasllm.models.batch_calls import install_predict_on_batch
from kerasllm.models.peft import freeze


def decoder_block(config, name, cross_attention=False):
    """One :class:`TransformerDecoderBlock` as ``config`` describes it (LoRA and adapters included)."""
    return TransformerDecoderBlock(cross_attention=cross_attention, name=name, **config.block_args())


def gpt_decoder(config, name="gpt"):
    """GPT-2-style causal LM: inputs ``input_ids``, ``attention_mask``; logits ``[b, t, vocab]``.

    The LM head is the transposed token embedding (weight tying), as in GPT-2.

    Example:

    >>> import numpy as np
    >>> from kerasllm.models import get_preset
    >>> model = gpt_decoder(get_preset("gpt-tiny", vocab_size=100, num_layers=1))
    >>> model({"input_ids": np.array([[1, 2, 3]]), "attention_mask": np.ones((1, 3))}).shape
    TensorShape([1, 3, 100])
    """
    if config.model_type != "gpt":
        raise ValueError(f"gpt_decoder needs model_type='gpt', got {config.model_type!r}")
    inputs = {
        "input_ids": token_ids_input("input_ids"),
        "attention_mask": token_ids_input("attention_mask"),
    }
    embeddings = TransformerEmbedding(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        max_position=config.max_position,
        type_vocab_size=config.type_vocab_size,
        position_embedding=config.position_embedding,
        use_layer_norm=not config.normalize_first,
        layer_norm_epsilon=config.layer_norm_epsilon,
        dropout=config.dropout,
        initializer_range=config.initializer_range,
        name="embeddings",
    )
    x = embeddings(inputs["input_ids"])
    for i in range(config.num_layers):
        x = decoder_block(config, f"decoder_layer_{i}")(x, attention_mask=inputs["attention_mask"])
    if config.normalize_first:
        x = LayerNorm(epsilon=config.layer_norm_epsilon, name="final_norm")(x)
    logits = float32_logits(embeddings(x, reverse=True))
    model = keras.Model(inputs, logits, name=name)
    model.kerasllm_config = config
    model.kerasllm_task = {"task": "causal_lm"}
    return freeze(install_predict_on_batch(model))


def init_cache(config, batch_size, max_length, dtype=tf.float32):
    """A zero key/value cache ``[layers, batch, 2, max_length, heads, head_dim]``."""
    return tf.zeros(
        [config.num_layers, batch_size, 2, max_length, config.num_heads, config.head_dim], dtype
    )


def call_with_cache(model, input_ids, cache, cache_index, attention_mask=None, position_ids=None):
    """Run ``input_ids`` (the prompt, or one new token) through a GPT model using a cache.

    Args:
        model: a model from :func:`gpt_decoder` (or loaded from one).
        input_ids: ``[batch, n]`` new tokens, placed at ``cache_index .. cache_index+n``.
        cache: ``[layers, batch, 2, max_length, heads, head_dim]`` from :func:`init_cache`.
        cache_index: scalar position of the first new token.
        attention_mask: ``[batch, max_length]`` 1 for real tokens in the cache
            (left-padded prompts); the causal mask is always applied.
        position_ids: ``[batch, n]`` explicit positions (left padding); default
            ``cache_index + arange(n)``.

    Returns:
        ``(logits [batch, n, vocab] float32, updated cache)``.
    """
    embeddings = model.get_layer("embeddings")
    offset = None if position_ids is not None else cache_index
    x = embeddings(input_ids, position_ids=position_ids, position_offset=offset)
    new_caches = []
    layer_index = 0
    while True:
        try:
            block = model.get_layer(f"decoder_layer_{layer_index}")
        except ValueError:
            break
        x, layer_cache = block(
            x, attention_mask=attention_mask, cache=cache[layer_index], cache_index=cache_index
        )
        new_caches.append(layer_cache)
        layer_index += 1
    try:
        x = model.get_layer("final_norm")(x)
    except ValueError:
        pass
    logits = tf.cast(embeddings(x, reverse=True), tf.float32)
    return logits, tf.stack(new_caches)
