"""Encoder-decoder (T5-shaped) model with a shared, tied embedding.

Layer names: ``embeddings`` (shared by encoder, decoder and LM head),
``encoder_layer_{i}``, ``encoder_final_norm``, ``decoder_layer_{i}``,
``decoder_final_norm``, ``logits``.
"""
import tf_keras as keras

from kerasllm.layers import LayerNorm, TransformerEmbedding
from kerasllm.models.bert import encoder_block
from kerasllm.models.gpt import decoder_block
from kerasllm.models.batch_calls import install_predict_on_batch
from kerasllm.models.peft import freeze
from kerasllm.models.heads import float32_logits, token_ids_input


def encoder_decoder(config, name="encoder_decoder"):
    """Sequence-to-sequence LM.

    Inputs: ``encoder_input_ids``, ``encoder_attention_mask``, ``decoder_input_ids``,
    ``decoder_attention_mask``. Output: decoder logits ``[b, t_dec, vocab]`` (float32).

    Example:

    >>> import numpy as np
    >>> from kerasllm.models import get_preset
    >>> model = encoder_decoder(get_preset("t5-tiny", vocab_size=50))
    >>> ids, mask = np.array([[4, 5, 6]]), np.ones((1, 3))
    >>> model({"encoder_input_ids": ids, "encoder_attention_mask": mask,
    ...        "decoder_input_ids": ids[:, :2], "decoder_attention_mask": mask[:, :2]}).shape
    TensorShape([1, 2, 50])
    """
    if config.model_type != "encoder_decoder":
        raise ValueError(
            f"encoder_decoder needs model_type='encoder_decoder', got {config.model_type!r}"
        )
    inputs = {
        name: token_ids_input(name)
        for name in (
            "encoder_input_ids",
            "encoder_attention_mask",
            "decoder_input_ids",
            "decoder_attention_mask",
        )
    }
    embeddings = TransformerEmbedding(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        max_position=config.max_position,
        type_vocab_size=0,
        position_embedding=config.position_embedding,
        use_layer_norm=not config.normalize_first,
        layer_norm_epsilon=config.layer_norm_epsilon,
        dropout=config.dropout,
        initializer_range=config.initializer_range,
        name="embeddings",
    )

    def final_norm(x, name):
        if not config.normalize_first:
            return x
        return LayerNorm(epsilon=config.layer_norm_epsilon, name=name)(x)

    enc = embeddings(inputs["encoder_input_ids"])
    for i in range(config.num_layers):
        enc = encoder_block(config, f"encoder_layer_{i}")(enc, attention_mask=inputs["encoder_attention_mask"])
    enc = final_norm(enc, "encoder_final_norm")

    dec = embeddings(inputs["decoder_input_ids"])
    for i in range(config.num_decoder_layers):
        dec = decoder_block(config, f"decoder_layer_{i}", cross_attention=True)(
            dec,
            encoder_outputs=enc,
            attention_mask=inputs["decoder_attention_mask"],
            encoder_attention_mask=inputs["encoder_attention_mask"],
        )
    dec = final_norm(dec, "decoder_final_norm")
    logits = float32_logits(embeddings(dec, reverse=True))
    model = keras.Model(inputs, logits, name=name)
    model.kerasllm_config = config
    model.kerasllm_task = {"task": "seq2seq_lm"}
    return freeze(install_predict_on_batch(model))
