"""Parameter-efficient fine-tuning: LoRA, bottleneck adapters and freezing for kerasllm models.

The settings live in the :class:`~kerasllm.models.TransformerConfig` (``lora_*``,
``adapter_size``, ``freeze_*``), so every builder, :func:`~kerasllm.models.load_pretrained`
and the export's float32 rebuild produce the same trainable layout. Typical use::

    model = with_peft(model, lora_rank=8)        # base frozen, LoRA + head train
    print(describe_peft(model))                  # LoRA rank 8 alpha 16 on query,value; ...
    model.compile(...); model.fit(...)
    deployable = merge_peft(model)               # W + alpha/r * A @ B, no LoRA layers left
"""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from kerasllm.layers.encoder_block import PEFT_LAYERS, freeze_base_weights

# Layers that stay trainable under LoRA/adapters: the task heads (and the pooler,
# which sequence classification and next-sentence prediction train as part of the head).
HEAD_LAYERS = ("classifier", "pooler", "nsp", "mlm_transform", "mlm_norm", "mlm_bias")


def _block_name(config, index):
    return f"{'decoder' if config.model_type == 'gpt' else 'encoder'}_layer_{index}"


def _config_of(model, what):
    config = getattr(model, "kerasllm_config", None)
    if config is None or getattr(model, "kerasllm_task", None) is None:
        raise ValueError(f"{what} needs a model built by kerasllm.models (it has no kerasllm_config)")
    return config


def _check_freeze_layers(value, config, where):
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= config.num_layers:
        raise ValueError(
            f"{where}: freeze_layers={value!r} is invalid: must be an integer from 0 to the model's "
            f"{config.num_layers} blocks (num_layers)"
        )


def freeze(model, embeddings=False, layers=0):
    """Freeze, in place, the embeddings and/or the lowest ``layers`` blocks of ``model``.

    Also applies the freezing the model's config asks for: with LoRA or adapters
    (``config.uses_peft``) every weight outside LoRA/adapter layers and the task
    head (:data:`HEAD_LAYERS`) is frozen. Freezing only adds: what is frozen stays
    frozen. The result is recorded in ``model.kerasllm_config`` (``freeze_embeddings``,
    ``freeze_layers``), so :func:`~kerasllm.models.save_pretrained` /
    :func:`~kerasllm.models.load_pretrained` reproduce it. Every builder calls
    ``freeze(model)``. Compile (again) after freezing.

    Args:
        model: a kerasllm model (it has ``kerasllm_config``).
        embeddings: freeze the ``embeddings`` layer (token, position, segment
            tables and their layer norm; also the tied LM head of GPT/MLM models).
        layers: freeze blocks ``0 .. layers-1`` (``encoder_layer_i``;
            ``decoder_layer_i`` for GPT); at most ``num_layers``.

    Returns:
        ``model``.

    Example:

    >>> from kerasllm.models import get_preset, token_classifier
    >>> model = token_classifier(get_preset("bert-tiny", vocab_size=100), num_labels=3)
    >>> _ = freeze(model, embeddings=True, layers=1)
    >>> [layer.name for layer in model.layers if layer.weights and not layer.trainable]
    ['embeddings', 'encoder_layer_0']
    >>> model.kerasllm_config.freeze_layers
    1
    """
    config = _config_of(model, "freeze")
    _check_freeze_layers(layers, config, "freeze")
    config = config.replace(
        freeze_embeddings=bool(config.freeze_embeddings or embeddings),
        freeze_layers=max(config.freeze_layers, layers),
    )
    model.kerasllm_config = config
    if config.uses_peft:
        for layer in model.layers:
            if layer.name not in HEAD_LAYERS:
                freeze_base_weights(layer)
    if config.freeze_embeddings:
        model.get_layer("embeddings").trainable = False
    for i in range(config.freeze_layers):
        model.get_layer(_block_name(config, i)).trainable = False
    return model


def _weights_by_name(model):
    return {w.name: w for w in model.weights}


def _peft_weight_names(model):
    return {
        w.name
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, PEFT_LAYERS)
        for w in layer.weights
    }


def _rebuild(model, config, values, where):
    """A new model of ``model``'s task for ``config``, given ``values`` by weight name.

    Weights absent from ``values`` must be new LoRA/adapter weights (they keep
    their fresh initialisation). Built in the caller's ``tf.distribute`` scope, or
    in the source model's strategy when no scope is open.
    """
    from kerasllm.models.saving import build_model

    info = dict(model.kerasllm_task)
    task = info.pop("task")
    strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else model.distribute_strategy
    with strategy.scope():
        new = build_model(config, task, **info)
    fresh = _peft_weight_names(new)
    pairs, missing = [], []
    for name, variable in _weights_by_name(new).items():
        if name in values:
            value = np.asarray(values[name], variable.dtype.as_numpy_dtype)
            if value.shape != tuple(variable.shape):
                raise ValueError(
                    f"{where}: {name} has shape {value.shape} in the source model but {tuple(variable.shape)} "
                    "with the new settings (a different LoRA rank? fold LoRA in with merge_peft(model) first)"
                )
            pairs.append((variable, value))
        elif name not in fresh:
            missing.append(name)
    if missing:
        raise ValueError(f"{where}: the source model has no weight for {missing[:4]} (is it a kerasllm model?)")
    keras.backend.batch_set_value(pairs)
    new.kerasllm_task = dict(model.kerasllm_task)
    for attr in ("kerasllm_source_config",):
        if hasattr(model, attr):
            setattr(new, attr, getattr(model, attr))
    return new


def with_peft(
    model,
    *,
    lora_rank=0,
    lora_alpha=16.0,
    lora_dropout=0.0,
    lora_targets=("query", "value"),
    adapter_size=0,
    freeze_embeddings=False,
    freeze_layers=0,
):
    """A new model of ``model``'s architecture and task with LoRA, adapters and/or freezing.

    Every weight of ``model`` is copied over (by name); LoRA factors start with
    ``lora_b = 0`` and adapters with a zero up-projection, so the new model
    computes exactly what ``model`` did until it is trained. With LoRA or
    adapters every base weight is frozen: only the LoRA/adapter weights and the
    task head stay trainable. The head is ``classifier`` (token
    classification), ``pooler`` + ``classifier`` (sequence classification),
    ``mlm_transform``/``mlm_norm``/``mlm_bias``/``nsp``/``pooler`` (pretraining).
    A GPT or encoder-decoder LM head is tied to the (frozen) embeddings.

    The model is created in the caller's ``tf.distribute`` strategy scope (or
    the source model's strategy when no scope is open); compile it there.

    Args:
        model: a kerasllm model (built by :mod:`kerasllm.models` or loaded).
        lora_rank: rank ``r`` of the LoRA updates (0 = no LoRA).
        lora_alpha: updates are scaled by ``lora_alpha / lora_rank``.
        lora_dropout: dropout on the input of the LoRA paths.
        lora_targets: from ``"query"``, ``"key"``, ``"value"``, ``"output"``
            (attention output projection) and ``"ffn"`` (both feed-forward layers).
        adapter_size: bottleneck width of Houlsby adapters (0 = none).
        freeze_embeddings: freeze the embedding layer.
        freeze_layers: freeze the lowest this many blocks (at most ``num_layers``).

    Returns:
        The new tf_keras model, with ``kerasllm_config`` holding these settings.

    Raises:
        ValueError: a bad argument (named), or ``model`` already has LoRA/adapter
            weights the new settings have no place for (merge them first with
            :func:`merge_peft`).

    Example:

    >>> from kerasllm.models import get_preset, token_classifier
    >>> base = token_classifier(get_preset("bert-tiny", vocab_size=100), num_labels=3)
    >>> model = with_peft(base, lora_rank=4)
    >>> sorted({w.name.split("/")[0] for w in model.trainable_weights})
    ['classifier', 'encoder_layer_0', 'encoder_layer_1']
    >>> parameter_counts(model)["trainable"]  # 2 blocks * 2 targets * (128*4 + 4*128) + 128*3 + 3
    4483
    """
    config = _config_of(model, "with_peft")
    _check_freeze_layers(freeze_layers, config, "with_peft")
    new_config = config.replace(
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_targets=lora_targets,
        adapter_size=adapter_size,
        freeze_embeddings=bool(freeze_embeddings),
        freeze_layers=freeze_layers,
    )
    values = {name: w.numpy() for name, w in _weights_by_name(model).items()}
    new = _rebuild(model, new_config, values, "with_peft")
    kept = _weights_by_name(new)
    dropped = sorted(name for name in _peft_weight_names(model) if name not in kept)
    if dropped:
        raise ValueError(
            f"with_peft: the model already has LoRA/adapter weights the new settings drop ({dropped[:3]} ...; "
            f"it has {describe_peft(config)}); fold LoRA in with merge_peft(model) first, or keep its settings"
        )
    return new


def merge_peft(model):
    """A new model with every LoRA update folded into its base kernel.

    Each adapted kernel becomes ``W + lora_alpha / lora_rank * lora_a @ lora_b``
    (for the fused attention kernel, on its query/key/value column block), and
    the config gets ``lora_rank=0``: the merged model has the base model's
    weights and names, so it exports (TFLite, ONNX, Hugging Face) and runs at
    the base model's cost. Its outputs equal the unmerged model's up to float
    rounding. Adapters are nonlinear and cannot be folded: they stay, trainable
    with the head as before (base weights stay frozen while adapters remain).

    Example:

    >>> import numpy as np
    >>> from kerasllm.models import get_preset, token_classifier
    >>> lora = with_peft(token_classifier(get_preset("bert-tiny", vocab_size=100), num_labels=3), lora_rank=4)
    >>> merged = merge_peft(lora)
    >>> merged.kerasllm_config.lora_rank, len(merged.weights) == len(lora.weights) - 2 * 2 * 2
    (0, True)
    """
    config = _config_of(model, "merge_peft")
    values = {name: w.numpy() for name, w in _weights_by_name(model).items()}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        merged = getattr(layer, "merged_lora_kernels", None)
        if merged is not None:
            values.update(merged())
    return _rebuild(model, config.replace(lora_rank=0), values, "merge_peft")


def parameter_counts(model):
    """``{"trainable": int, "total": int, "fraction": trainable / total}`` of ``model``.

    Example:

    >>> from kerasllm.models import get_preset, token_classifier
    >>> counts = parameter_counts(token_classifier(get_preset("bert-tiny", vocab_size=100), num_labels=3))
    >>> counts["trainable"] == counts["total"], counts["fraction"]
    (True, 1.0)
    """
    trainable = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    total = int(model.count_params())
    return {"trainable": trainable, "total": total, "fraction": trainable / total if total else 0.0}


def _human(count):
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= size:
            return f"{count / size:.1f}{suffix}"
    return str(count)


def _percent(fraction):
    percent = 100 * fraction
    return f"{percent:.1f}%" if percent >= 0.1 or percent == 0 else f"{percent:.2g}%"


def describe_peft(config_or_model):
    """One line: the fine-tuning method and, for a model, how many parameters train.

    Example:

    >>> from kerasllm.models import get_preset
    >>> describe_peft(get_preset("bert-tiny", lora_rank=8, freeze_embeddings=True))
    'LoRA rank 8 alpha 16 on query,value, embeddings frozen'
    >>> describe_peft(get_preset("bert-tiny"))
    'full fine-tuning'
    """
    model = None
    config = config_or_model
    if hasattr(config_or_model, "kerasllm_config"):
        model, config = config_or_model, config_or_model.kerasllm_config
    parts = []
    if config.lora_rank:
        lora = f"LoRA rank {config.lora_rank} alpha {config.lora_alpha:g} on {','.join(config.lora_targets)}"
        if config.lora_dropout:
            lora += f" dropout {config.lora_dropout:g}"
        parts.append(lora)
    if config.adapter_size:
        parts.append(f"adapters of size {config.adapter_size}")
    if config.freeze_embeddings:
        parts.append("embeddings frozen")
    if config.freeze_layers:
        parts.append(f"lowest {config.freeze_layers} of {config.num_layers} layers frozen")
    line = ", ".join(parts) or "full fine-tuning"
    if model is not None:
        counts = parameter_counts(model)
        line += f"; {_percent(counts['fraction'])} of {_human(counts['total'])} parameters trainable"
    return line
