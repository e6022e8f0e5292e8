"""BERT-style encoders, pretraining heads and task heads (flat functional tf_keras models).

Every builder lays the same named layers into one flat graph (no nested models),
so TF-MOT wrappers, LoRA and the checkpoint tables address layers by name:

    embeddings, encoder_layer_{i}, pooler, mlm_transform, mlm_norm, mlm_bias, nsp,
    classifier
"""
import tf_keras as keras

from kerasllm.layers import Dropout, LayerNorm, TransformerEmbedding, TransformerEncoderBlock
from kerasllm.layers.encoder_block import default_initializer
from kerasllm.models.heads import NamedActivation, Pooler, VocabBias, dense_head, float32_logits, token_ids_input
from kerasllm.models.batch_calls import install_predict_on_batch
from kerasllm.models.peft import freeze


def _check(config):
    if config.model_type != "bert":
        raise ValueError(
            f"this builder needs a config with model_type='bert', got {config.model_type!r}"
        )


def bert_inputs():
    """The three named integer inputs of every BERT model."""
    return {
        "input_ids": token_ids_input("input_ids"),
        "attention_mask": token_ids_input("attention_mask"),
        "token_type_ids": token_ids_input("token_type_ids"),
    }


def encoder_block(config, name):
    """One :class:`TransformerEncoderBlock` as ``config`` describes it (LoRA and adapters included)."""
    return TransformerEncoderBlock(name=name, **config.block_args())


def encoder_layers(config, inputs, pooler=True):
    """Lay embeddings and encoder blocks over ``inputs``; return ``(embeddings_layer, sequence, pooled)``.

    The pooler is built only when ``pooler`` and ``config.use_pooler`` (else ``pooled`` is None),
    so a model never carries weights that receive no gradient.
    """
    embeddings = TransformerEmbedding(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        max_position=config.max_position,
        type_vocab_size=config.type_vocab_size,
        position_embedding=config.position_embedding,
        use_layer_norm=True,
        layer_norm_epsilon=config.layer_norm_epsilon,
        dropout=config.dropout,
        initializer_range=config.initializer_range,
        name="embeddings",
    )
    token_types = inputs.get("token_type_ids") if config.type_vocab_size else None
    x = embeddings(inputs["input_ids"], token_type_ids=token_types)
    for i in range(config.num_layers):
        x = encoder_block(config, f"encoder_layer_{i}")(x, attention_mask=inputs["attention_mask"])
    pooled = None
    if pooler and config.use_pooler:
        pooled = Pooler(
            config.hidden_size,
            kernel_initializer=default_initializer(config.initializer_range),
            name="pooler",
        )(x)
    return embeddings, x, pooled


def _tag(model, config, task, **info):
    """Attach the config and task, and freeze what the config's PEFT settings ask for."""
    model.kerasllm_config = config
    model.kerasllm_task = dict(task=task, **info)
    return freeze(install_predict_on_batch(model))


def bert_encoder(config, name="bert_encoder"):
    """BERT backbone: ``{"sequence_output", "pooled_output"}`` (pooled only with ``use_pooler``).

    Example:

    >>> from kerasllm.models import get_preset
    >>> model = bert_encoder(get_preset("bert-tiny", vocab_size=100))
    >>> sorted(model.output_names)
    ['pooled_output', 'sequence_output']
    """
    _check(config)
    inputs = bert_inputs()
    _, sequence, pooled = encoder_layers(config, inputs)
    outputs = {"sequence_output": float32_logits(sequence, "sequence_output")}
    if pooled is not None:
        outputs["pooled_output"] = float32_logits(pooled, "pooled_output")
    return _tag(keras.Model(inputs, outputs, name=name), config, "encoder")


def mlm_logits(config, embeddings, sequence):
    """BERT's masked-LM head: dense + GELU + layer norm, tied decoder, vocabulary bias."""
    h = keras.layers.Dense(
        config.hidden_size,
        kernel_initializer=default_initializer(config.initializer_range),
        name="mlm_transform",
    )(sequence)
    h = NamedActivation(config.activation, name="mlm_activation")(h)
    h = LayerNorm(epsilon=config.layer_norm_epsilon, name="mlm_norm")(h)
    logits = VocabBias(config.vocab_size, name="mlm_bias")(embeddings(h, reverse=True))
    return float32_logits(logits, "mlm_logits")


def bert_pretraining(config, next_sentence=True, name="bert_pretraining"):
    """BERT with the masked-LM head (tied to the token embedding) and the next-sentence head.

    Outputs ``{"mlm_logits": [b, t, vocab], "nsp_logits": [b, 2]}`` (NSP only with
    ``next_sentence=True``, which needs ``use_pooler``).
    """
    _check(config)
    if next_sentence and not config.use_pooler:
        raise ValueError("next_sentence=True needs use_pooler=True in the config")
    inputs = bert_inputs()
    embeddings, sequence, pooled = encoder_layers(config, inputs, pooler=next_sentence)
    outputs = {"mlm_logits": mlm_logits(config, embeddings, sequence)}
    if next_sentence:
        outputs["nsp_logits"] = dense_head(pooled, 2, config, "nsp")
    return _tag(keras.Model(inputs, outputs, name=name), config, "pretraining", next_sentence=next_sentence)


def token_classifier(config, num_labels, name="token_classifier"):
    """BERT + dropout + dense over every token: logits ``[b, t, num_labels]`` (float32)."""
    _check(config)
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    inputs = bert_inputs()
    _, sequence, _ = encoder_layers(config, inputs, pooler=False)
    x = Dropout(config.dropout, name="classifier_dropout")(sequence)
    logits = dense_head(x, num_labels, config, "classifier")
    return _tag(keras.Model(inputs, logits, name=name), config, "token_classification", num_labels=num_labels)


def sequence_classifier(config, num_labels, name="sequence_classifier"):
    """BERT + pooler + dropout + dense: logits ``[b, num_labels]`` (float32)."""
    _check(config)
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    if not config.use_pooler:
        raise ValueError("sequence_classifier needs use_pooler=True in the config")
    inputs = bert_inputs()
    _, _, pooled = encoder_layers(config, inputs)
    x = Dropout(config.dropout, name="classifier_dropout")(pooled)
    logits = dense_head(x, num_labels, config, "classifier")
    return _tag(
        keras.Model(inputs, logits, name=name), config, "sequence_classification", num_labels=num_labels
    )
