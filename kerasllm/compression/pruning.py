"""Magnitude pruning of kerasllm models with TF-MOT, on kerasllm's own layers.

TF-MOT's ``PruneLowMagnitude`` wraps a top-level layer and prunes the weights
its ``get_prunable_weights()`` returns. kerasllm's layers do not define that
method themselves; :func:`prune_model` gives each wrapped layer one that returns
the projection kernels from :func:`kerasllm.compression._layers.projection_paths`:

===========================  ==================================================
layer                        pruned weights
===========================  ==================================================
TransformerEncoderBlock /    ``attention.qkv_kernel`` (fused Q|K|V),
TransformerDecoderBlock      ``attention.output_kernel``, cross-attention
                             ``query_kernel``/``kv_kernel``/``output_kernel``,
                             ``ffn.intermediate.kernel``, ``ffn.output_dense.kernel``
MultiHeadAttention           its projection kernels
FeedForward                  both dense kernels
TransformerEmbedding         ``token_embeddings`` (only with ``include_embeddings``)
Dense heads, Pooler          their kernels (only with ``include_heads``)
===========================  ==================================================

Biases, layer norms and position/segment tables are never pruned. Each weight
tensor reaches the target sparsity on its own (per-tensor magnitude threshold),
or keeps the 2 largest of every 4 consecutive input weights with ``m_by_n=(2, 4)``.

Typical use::

    pruned = prune_model(model, sparsity=0.5, schedule="polynomial", end_step=steps)
    pruned.compile(...)
    pruned.fit(data, epochs=2, callbacks=pruning_callbacks())
    model = strip_pruning(pruned)           # plain kerasllm model, zeros in place
    sparsity_report(model)                  # per-weight zero fractions
"""
import gzip
import os
import types

import numpy as np
import tf_keras as keras

from kerasllm.compression._layers import copy_model_attributes, display_name, projection_paths, resolve, unwrap

SCHEDULES = ("constant", "polynomial")


def _tfmot():
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras


def _wrapper_class():
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

    return PruneLowMagnitude


def check_sparsity(sparsity, name="sparsity"):
    """Raise a ValueError unless ``0 < sparsity < 1``."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {sparsity!r}") from None
    if not 0.0 < value < 1.0:
        raise ValueError(
            f"{name} must be strictly between 0 and 1 (0.5 prunes half of each weight tensor), got {sparsity!r}"
        )
    return value


def make_schedule(sparsity, schedule="constant", begin_step=0, end_step=None, frequency=100, initial_sparsity=0.0):
    """A TF-MOT pruning schedule.

    Args:
        sparsity: final fraction of zeros in each pruned tensor, in (0, 1).
        schedule: ``"constant"`` (prune to ``sparsity`` at ``begin_step`` and keep it)
            or ``"polynomial"`` (cubic ramp from ``initial_sparsity`` at ``begin_step``
            to ``sparsity`` at ``end_step``, Zhu & Gupta 2017).
        begin_step: first optimizer step that prunes.
        end_step: last step of the polynomial ramp (required for ``"polynomial"``).
        frequency: steps between mask updates.
        initial_sparsity: start of the polynomial ramp, in [0, sparsity).

    Example:

    >>> make_schedule(0.8, "polynomial", end_step=1000).get_config()["config"]["final_sparsity"]
    0.8
    """
    sparsity = check_sparsity(sparsity)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}; allowed values: {', '.join(SCHEDULES)}")
    if not isinstance(frequency, int) or frequency < 1:
        raise ValueError(f"frequency must be a positive integer (steps between mask updates), got {frequency!r}")
    if begin_step < 0:
        raise ValueError(f"begin_step must be >= 0, got {begin_step}")
    sparsity_api = _tfmot()
    if schedule == "constant":
        return sparsity_api.ConstantSparsity(sparsity, begin_step=begin_step, frequency=frequency)
    if end_step is None or end_step <= begin_step:
        raise ValueError(
            f"the polynomial schedule needs end_step > begin_step={begin_step} (got end_step={end_step}); "
            "set it to about the number of fine-tuning steps"
        )
    if not 0.0 <= initial_sparsity < sparsity:
        raise ValueError(f"initial_sparsity must be in [0, {sparsity}), got {initial_sparsity}")
    return sparsity_api.PolynomialDecay(
        initial_sparsity=float(initial_sparsity),
        final_sparsity=sparsity,
        begin_step=begin_step,
        end_step=int(end_step),
        frequency=frequency,
    )


def _make_prunable(layer, paths):
    """Give ``layer`` the ``get_prunable_weights`` TF-MOT's wrapper asks for."""

    def get_prunable_weights(self):
        return [resolve(self, path) for path in paths]

    layer.get_prunable_weights = types.MethodType(get_prunable_weights, layer)
    layer._kerasllm_prunable_paths = list(paths)


def prune_model(
    model,
    sparsity=0.5,
    schedule="constant",
    begin_step=0,
    end_step=None,
    frequency=100,
    initial_sparsity=0.0,
    m_by_n=None,
    include_embeddings=False,
    include_heads=False,
):
    """Wrap the prunable layers of a kerasllm model for magnitude pruning during training.

    ``model`` itself is left as it is (its weights are copied); compile the
    returned model and train it with :func:`pruning_callbacks` (TF-MOT's
    ``UpdatePruningStep``), then :func:`strip_pruning`.

    Args:
        model: a functional ``tf_keras`` kerasllm model (any builder of
            :mod:`kerasllm.models`, or a model with kerasllm layers).
        sparsity: target fraction of zeros per tensor, strictly between 0 and 1.
        schedule, begin_step, end_step, frequency, initial_sparsity: see
            :func:`make_schedule`.
        m_by_n: ``(2, 4)`` for 2:4 structured sparsity (2 zeros in every block of 4
            consecutive input weights, TF-MOT's ``sparsity_m_by_n``); the masks are
            set at the first training step and ``sparsity`` is then 2/4.
        include_embeddings: also prune the token embedding table.
        include_heads: also prune ``Dense`` heads and the pooler (the classifier
            is small and sensitive; off by default).

    Returns:
        The pruning model (layers wrapped in ``PruneLowMagnitude``).

    Raises:
        ValueError: sparsity outside (0, 1), a bad schedule, or nothing to prune.

    Example:

    >>> from kerasllm.models import get_preset, token_classifier
    >>> model = token_classifier(get_preset("bert-tiny", vocab_size=100), num_labels=3)
    >>> pruned = prune_model(model, sparsity=0.5)
    >>> [layer.name for layer in pruned.layers if "prune" in layer.name]
    ['prune_low_magnitude_encoder_layer_0', 'prune_low_magnitude_encoder_layer_1']
    """
    if m_by_n is not None:
        m_by_n = tuple(int(v) for v in m_by_n)
        if len(m_by_n) != 2 or not 0 < m_by_n[0] < m_by_n[1]:
            raise ValueError(f"m_by_n must be two integers (m, n) with 0 < m < n, such as (2, 4); got {m_by_n}")
        sparsity = m_by_n[0] / m_by_n[1]
    pruning_schedule = make_schedule(sparsity, schedule, begin_step, end_step, frequency, initial_sparsity)
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise ValueError("prune_model needs a functional tf_keras model (kerasllm builders make those)")
    from kerasllm.compression.saving import copy_model

    targets = {}
    for layer in model.layers:
        if isinstance(layer, _wrapper_class()):
            raise ValueError(f"layer {layer.name!r} is already wrapped for pruning; call strip_pruning first")
        paths = projection_paths(layer, include_embeddings=include_embeddings, include_heads=include_heads)
        if paths:
            targets[layer.name] = paths
    if not targets:
        kinds = sorted({type(layer).__name__ for layer in model.layers})
        raise ValueError(
            f"model {model.name!r} has nothing to prune: no kerasllm attention/feed-forward layer"
            + ("" if include_heads else " (Dense heads are skipped unless include_heads=True)")
            + f"; its layers are {', '.join(kinds)}"
        )
    params = {"pruning_schedule": pruning_schedule, "sparsity_m_by_n": m_by_n}
    source, model = model, copy_model(model)

    def wrap(layer):
        if layer.name not in targets:
            return layer
        _make_prunable(layer, targets[layer.name])
        return _wrapper_class()(layer, **params)

    pruned = keras.models.clone_model(model, clone_function=wrap)
    return copy_model_attributes(source, pruned)


def pruning_callbacks(log_dir=None):
    """``[UpdatePruningStep()]`` (+ ``PruningSummaries`` into ``log_dir``): pass them to ``fit``."""
    sparsity_api = _tfmot()
    callbacks = [sparsity_api.UpdatePruningStep()]
    if log_dir:
        callbacks.append(sparsity_api.PruningSummaries(log_dir=log_dir))
    return callbacks


def strip_pruning(model):
    """The plain model with pruned (zeroed) weights: TF-MOT's ``strip_pruning`` keeping kerasllm attributes.

    The masks are applied once more before stripping, so the result is sparse even
    if the last training step changed a masked weight.
    """
    sparsity_api = _tfmot()
    for layer in model.layers:
        if isinstance(layer, _wrapper_class()) and layer.pruning_obj is not None:
            for weight, mask, _ in layer.pruning_vars:
                weight.assign(weight * mask)
    stripped = sparsity_api.strip_pruning(model)
    return copy_model_attributes(model, stripped)


def prune_iteratively(model, fit, sparsity, rounds=3, **prune_kwargs):
    """Prune-then-fine-tune in ``rounds`` steps of growing sparsity.

    Round ``r`` (1-based) prunes every tensor to ``sparsity * r / rounds`` (constant
    schedule from the round's first step), then calls ``fit(pruned_model, r)``,
    which compiles and trains it with :func:`pruning_callbacks`. Weights pruned in
    one round are the smallest in the next, so they stay pruned.

    Returns:
        The stripped model at the final sparsity.
    """
    sparsity = check_sparsity(sparsity)
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    prune_kwargs = {k: v for k, v in prune_kwargs.items() if k not in ("schedule", "begin_step", "end_step")}
    for r in range(1, rounds + 1):
        pruned = prune_model(model, sparsity=sparsity * r / rounds, schedule="constant", **prune_kwargs)
        fit(pruned, r)
        model = strip_pruning(pruned)
    return model


def sparsity_report(model, include_embeddings=True, include_heads=True):
    """Zero fraction of every projection weight of ``model`` (wrapped or stripped).

    Returns:
        A dict: ``weights`` (one dict per tensor: ``name``, ``shape``, ``size``,
        ``zeros``, ``sparsity``), and ``total`` (sums over those tensors:
        ``size``, ``zeros``, ``sparsity``).
    """
    rows = []
    for top in model.layers:
        layer = unwrap(top)
        for path in projection_paths(layer, include_embeddings=include_embeddings, include_heads=include_heads):
            value = np.asarray(resolve(layer, path).numpy())
            zeros = int(np.count_nonzero(value == 0))
            rows.append(
                {
                    "name": display_name(layer, path),
                    "shape": list(value.shape),
                    "size": int(value.size),
                    "zeros": zeros,
                    "sparsity": zeros / value.size if value.size else 0.0,
                }
            )
    size = sum(r["size"] for r in rows)
    zeros = sum(r["zeros"] for r in rows)
    return {"weights": rows, "total": {"size": size, "zeros": zeros, "sparsity": zeros / size if size else 0.0}}


def format_sparsity_report(report):
    """The report of :func:`sparsity_report` as a fixed-width text table."""
    width = max([len(r["name"]) for r in report["weights"]] + [6])
    lines = [f"{'weight':<{width}}  {'shape':>14}  {'sparsity':>8}"]
    for r in report["weights"]:
        shape = "x".join(str(d) for d in r["shape"])
        lines.append(f"{r['name']:<{width}}  {shape:>14}  {r['sparsity'] * 100:7.2f}%")
    total = report["total"]
    lines.append(f"{'total':<{width}}  {total['size']:>14,}  {total['sparsity'] * 100:7.2f}%")
    return "\n".join(lines)


def parameter_counts(model):
    """``(parameters, non-zero parameters)`` over the model's weights.

    The variables TF-MOT wrappers add (pruning masks and steps, quantization ranges)
    are not parameters of the model and are left out.
    """
    skip = set()
    for layer in model.layers:
        if isinstance(layer, keras.layers.Wrapper):
            skip.update(id(v) for v in layer._non_trainable_weights)
    total = nonzero = 0
    for weight in model.weights:
        if id(weight) in skip:
            continue
        value = weight.numpy()
        total += value.size
        nonzero += int(np.count_nonzero(value))
    return total, nonzero


def gzip_size(path):
    """Size in bytes of ``path`` compressed with gzip (level 9): what sparsity buys on the wire."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        return len(gzip.compress(f.read(), compresslevel=9))
