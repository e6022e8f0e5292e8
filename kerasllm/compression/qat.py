"""Quantization-aware training (TF-MOT) over kerasllm's own layers, and its int8 TFLite export.

:func:`quantize_model` annotates every kerasllm layer with a ``QuantizeConfig``
from this module (``Dense`` heads included) and applies TF-MOT's ``quantize_apply``.
Activation ranges start at TF-MOT's [-6, 6] and follow a moving average (decay
0.999), so over a short fine-tune they stay narrow and clip the outliers of BERT's
residual stream, which the model learns around. Setting every range from data
before training instead (the mean per-batch min/max over 32 batches) gave the worse
int8 model on MiniLM fine-tuned on WNUT-17: test entity F1 33.94 against 39.67,
one QAT epoch each (bench/README.md).
What each config fake-quantizes during training:

==========================  ===========================================================
part of the model           during QAT
==========================  ===========================================================
attention projections       8-bit weights (fused ``qkv_kernel``, cross-attention
(dense, as one matmul)      ``query_kernel``/``kv_kernel``, ``output_kernel``):
                            symmetric, per tensor, narrow range [-127, 127]
attention tensors           8-bit (moving-average ranges): the projection output, the
                            scaled queries, the scores ``QK^T``, the weighted values
                            ``probs @ V``, the renormalised context and the output
                            projection (the ``QUANT_POINTS`` of ``MultiHeadAttention``)
feed-forward kernels        8-bit weights, same scheme (both ``Dense`` or
                            :class:`LowRankDense` factors)
feed-forward tensors        8-bit input and output of GELU/ReLU, the second
                            projection's output (``gelu_tanh`` is kept float: TF-MOT
                            knows no such activation)
residual sums, layer norms  8-bit: each residual sum and each layer norm's output
embedding tables            8-bit weights (token, position, segment) and the (normed)
                            embedding output
Dense heads, pooler         8-bit weights and outputs
biases                      kept float (the converter makes them int32)
inside a layer norm         kept float (mean, variance, reciprocal square root), and
                            float in the int8 file too by default (see below)
softmax                     kept float (TFLite's int8 softmax has a fixed output
                            scale of 1/256)
==========================  ===========================================================

So every tensor between two matrix products that the int8 model stores in 8 bits
is fake-quantized with the range the converter will use: the converter
(:func:`kerasllm.export.export_tflite` with ``quantize="int8"``) takes the trained
ranges of these tensors and calibrates only the "kept float" ones on
representative data. By default the int8 file keeps the ops inside each layer norm
in float (``export_tflite(..., float_layer_norm=True)``): on MiniLM/WNUT-17 one QAT
model (Keras test entity F1 40.39) gave 39.98 as that file and 38.72 with the
layer-norm statistics in int8 too, at the same size and latency (bench/README.md).
``float_layer_norm=False`` gives a full-integer model wherever TFLite has an int8 kernel.
Pruning-preserving QAT (``preserve_sparsity=True``) multiplies every weight by a
fixed 0/1 mask of its non-zero entries before fake quantization, so pruned weights
get no gradient, stay exactly zero through QAT and are zero in the int8 file. This
is what TF-MOT's ``Default8BitPrunePreserveQuantizeScheme`` does for built-in
``Dense``/``Conv`` layers; that scheme's registry does not reach custom layers, so
kerasllm's weight quantizer carries the mask itself.

Weights are per tensor, not per output channel: with a per-channel range on a
``[in, out]`` kernel the converter fails ("'tfl.transpose' op has mismatched
quantized axes"), because FULLY_CONNECTED stores the kernel transposed.
"""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from kerasllm.compression._layers import assign, copy_model_attributes, display_name, projection_paths, resolve, unwrap
from kerasllm.layers._utils import portable_graph

_QUANTIZABLE_ACTIVATIONS = ("gelu", "relu")


def _q():
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras


def _quantizers():
    from tensorflow_model_optimization.python.core.quantization.keras import quantizers

    return quantizers


class _WeightQuantizer(_quantizers().LastValueQuantizer):
    """8-bit symmetric per-tensor weight quantizer; optionally keeps zeros at zero.

    ``weight_name`` names the range (and mask) variables after the weight's path, so
    two kernels of one layer (``ffn.intermediate.kernel``, ``ffn.output_dense.kernel``)
    get distinct variables.
    """

    def __init__(self, weight_name=None, preserve_sparsity=False, **kwargs):
        kwargs = {"num_bits": 8, "per_axis": False, "symmetric": True, "narrow_range": True, **kwargs}
        super().__init__(**kwargs)
        self.weight_name = weight_name
        self.preserve_sparsity = bool(preserve_sparsity)

    def build(self, tensor_shape, name, layer):
        name = (self.weight_name or name).replace(".", "_")
        weights = super().build(tensor_shape, name, layer)
        if self.preserve_sparsity:
            weights["sparsity_mask"] = layer.add_weight(
                f"{name}_sparsity_mask",
                shape=tensor_shape,
                initializer=keras.initializers.Ones(),
                trainable=False,
            )
        return weights

    def __call__(self, inputs, training, weights, **kwargs):
        if "sparsity_mask" in weights:
            inputs = inputs * tf.cast(weights["sparsity_mask"], inputs.dtype)
        return super().__call__(inputs, training, weights, **kwargs)

    def get_config(self):
        return {**super().get_config(), "weight_name": self.weight_name, "preserve_sparsity": self.preserve_sparsity}


class _RangeQuantizer(_quantizers().MovingAverageQuantizer):
    """TF-MOT's 8-bit asymmetric moving-average activation quantizer, its range named after ``point``.

    TF-MOT builds an activation's range variables under the fixed name
    ``post_activation``; a layer with several quantized tensors needs one name
    each, so ``point`` (the tensor's attribute path) names them.
    """

    def __init__(self, point=None, **kwargs):
        kwargs = {"num_bits": 8, "per_axis": False, "symmetric": False, "narrow_range": False, **kwargs}
        super().__init__(**kwargs)
        self.point = point

    def build(self, tensor_shape, name, layer):
        return super().build(tensor_shape, (self.point or name).replace(".", "_"), layer)

    def get_config(self):
        return {**super().get_config(), "point": self.point}


def _activation_quantizer(point=None):
    return _RangeQuantizer(point)


def _point_paths(layer, prefix=""):
    """Paths of the tensors inside ``layer`` fake-quantized at their source (see the module table).

    Every :class:`~kerasllm.layers._utils.QuantPoints` point of the layer and its
    attention, layer-norm sublayers, and the output of the feed-forward's second
    projection (and of each low-rank factor's inner product).
    """
    from kerasllm.compression.lowrank import LowRankDense
    from kerasllm.layers import FeedForward
    from kerasllm.layers._utils import QuantPoints

    paths = [f"{prefix}qp_{p}" for p in layer.quant_points()] if isinstance(layer, QuantPoints) else []
    for name in ("attention", "cross_attention", "attention_norm", "cross_attention_norm", "ffn_norm"):
        sub = getattr(layer, name, None)
        if isinstance(sub, QuantPoints):
            paths += _point_paths(sub, f"{prefix}{name}.")
    ffn = layer if isinstance(layer, FeedForward) else getattr(layer, "ffn", None)
    if isinstance(ffn, FeedForward):
        ffn_prefix = prefix if ffn is layer else f"{prefix}ffn."
        out = ffn.output_dense
        if isinstance(out, LowRankDense):
            paths += [f"{ffn_prefix}output_dense.down.activation", f"{ffn_prefix}output_dense.up.activation"]
        else:
            paths.append(f"{ffn_prefix}output_dense.activation")
        if isinstance(ffn.intermediate, LowRankDense):
            paths.append(f"{ffn_prefix}intermediate.down.activation")
    return paths


class _KerasllmQuantizeConfig(_q().QuantizeConfig):
    """Fake-quantizes a layer's projection kernels, its FFN activation and its internal tensors (see the module table)."""

    include_embeddings = False
    quantize_activation = True
    quantize_points = True
    quantize_output = False

    def __init__(self, preserve_sparsity=False, activations="all"):
        self.preserve_sparsity = bool(preserve_sparsity)
        if activations not in ACTIVATION_MODES:
            raise ValueError(f"activations={activations!r}; allowed values: {list(ACTIVATION_MODES)}")
        self.activations = activations
        if activations == "outputs" and type(self).quantize_points:
            # Only the layer's output (and FFN activation) instead of every internal tensor.
            self.quantize_points, self.quantize_output = False, True

    def weight_paths(self, layer):
        return projection_paths(layer, include_embeddings=self.include_embeddings)

    def _activation_fn_paths(self, layer):
        ffn = getattr(layer, "ffn", layer)
        fn = getattr(ffn, "_activation_fn", None)
        if not self.quantize_activation or fn is None:
            return []
        name = getattr(fn, "__name__", getattr(getattr(fn, "activation", None), "__name__", ""))
        prefix = "" if ffn is layer else "ffn."
        return [prefix + "_activation_fn"] if name in _QUANTIZABLE_ACTIVATIONS else []

    def activation_paths(self, layer):
        return self._activation_fn_paths(layer) + (_point_paths(layer) if self.quantize_points else [])

    def get_weights_and_quantizers(self, layer):
        return [
            (resolve(layer, path), _WeightQuantizer(path, self.preserve_sparsity)) for path in self.weight_paths(layer)
        ]

    def get_activations_and_quantizers(self, layer):
        gelu = self._activation_fn_paths(layer)
        return [
            (resolve(layer, path), _activation_quantizer(None if path in gelu else path))
            for path in self.activation_paths(layer)
        ]

    def set_quantize_weights(self, layer, quantize_weights):
        for path, value in zip(self.weight_paths(layer), quantize_weights):
            assign(layer, path, value, track=False)

    def set_quantize_activations(self, layer, quantize_activations):
        for path, value in zip(self.activation_paths(layer), quantize_activations):
            assign(layer, path, value, track=False)

    def get_output_quantizers(self, layer):
        # A block's output is its last layer norm's (post-LN) or residual sum's (pre-LN)
        # quantized tensor already.
        return [_activation_quantizer()] if self.quantize_output else []

    def get_config(self):
        return {"preserve_sparsity": self.preserve_sparsity, "activations": self.activations}


class TransformerBlockQuantizeConfig(_KerasllmQuantizeConfig):
    """Encoder/decoder blocks: attention and FFN kernels, the FFN activation and the block output in 8 bits.

    Kept float: biases, both layer norms, the score einsums and the softmax.
    """


class AttentionQuantizeConfig(_KerasllmQuantizeConfig):
    """A :class:`MultiHeadAttention` used on its own: its projection kernels and output in 8 bits."""

    quantize_activation = False


class FeedForwardQuantizeConfig(_KerasllmQuantizeConfig):
    """A :class:`FeedForward` used on its own: both kernels, the activation and the output in 8 bits."""


class EmbeddingQuantizeConfig(_KerasllmQuantizeConfig):
    """:class:`TransformerEmbedding`: token, position and segment tables and the (normed) output in 8 bits.

    Kept float during training: the sum of the embeddings and the layer norm inside.
    """

    include_embeddings = True
    quantize_activation = False
    quantize_points = False
    quantize_output = True

    def weight_paths(self, layer):
        from kerasllm.compression._layers import EMBEDDING_TABLES

        return [name for name in EMBEDDING_TABLES if getattr(layer, name, None) is not None]


class PoolerQuantizeConfig(_KerasllmQuantizeConfig):
    """BERT's :class:`Pooler`: the dense kernel and the tanh output in 8 bits."""

    quantize_activation = False
    quantize_points = False
    quantize_output = True


class DenseQuantizeConfig(_KerasllmQuantizeConfig):
    """A ``Dense`` head: the kernel and the activation's output in 8 bits (as TF-MOT's default for
    ``Dense``, but keeping the layer's weight list intact so :func:`float_copy` can read it)."""

    def activation_paths(self, layer):
        name = getattr(layer.activation, "__name__", getattr(getattr(layer.activation, "activation", None), "__name__", ""))
        return ["activation"] if name in ("linear", "relu", "gelu", "softmax", "sigmoid", "tanh") else []

    def get_activations_and_quantizers(self, layer):
        return [(resolve(layer, path), _activation_quantizer()) for path in self.activation_paths(layer)]

    def get_output_quantizers(self, layer):
        return []


class LowRankDenseQuantizeConfig(_KerasllmQuantizeConfig):
    """A :class:`LowRankDense` head: both factors and the output in 8 bits."""

    quantize_activation = False
    quantize_points = False
    quantize_output = True


QUANTIZE_CONFIGS = {
    cls.__name__: cls
    for cls in (
        TransformerBlockQuantizeConfig,
        AttentionQuantizeConfig,
        FeedForwardQuantizeConfig,
        EmbeddingQuantizeConfig,
        PoolerQuantizeConfig,
        DenseQuantizeConfig,
        LowRankDenseQuantizeConfig,
    )
}


ACTIVATION_MODES = ("all", "outputs")


def _config_for(layer, preserve_sparsity, activations="all"):
    """The QuantizeConfig of a kerasllm layer or ``Dense`` head, None for others."""
    from kerasllm.compression.lowrank import LowRankDense
    from kerasllm.layers import FeedForward, MultiHeadAttention, TransformerEmbedding
    from kerasllm.models.heads import Pooler

    for cls, config in (
        (keras.layers.Dense, DenseQuantizeConfig),
        (TransformerEmbedding, EmbeddingQuantizeConfig),
        (MultiHeadAttention, AttentionQuantizeConfig),
        (FeedForward, FeedForwardQuantizeConfig),
        (Pooler, PoolerQuantizeConfig),
        (LowRankDense, LowRankDenseQuantizeConfig),
    ):
        if isinstance(layer, cls):
            return config(preserve_sparsity, activations)
    if projection_paths(layer):
        return TransformerBlockQuantizeConfig(preserve_sparsity, activations)
    return None


class _KeepLayout:
    """Layout transform that leaves the model as it is.

    TF-MOT's default transforms fold Conv/BatchNorm patterns (none in a Transformer)
    and put a ``QuantizeLayer`` after every input, which would fake-quantize the
    int32 token ids.
    """

    def apply(self, model, layer_quantize_map):
        return model, layer_quantize_map


def quantize_scheme():
    """TF-MOT's default 8-bit scheme without its layout transforms (see :class:`_KeepLayout`)."""
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_scheme as default_8bit,
    )

    class KerasllmQuantizeScheme(default_8bit.Default8BitQuantizeScheme):
        def get_layout_transformer(self):
            return _KeepLayout()

    return KerasllmQuantizeScheme()


def quantize_scope():
    """TF-MOT's ``quantize_scope`` with kerasllm's QuantizeConfigs and quantizer (to load QAT models)."""
    return _q().quantize_scope({**QUANTIZE_CONFIGS, "_WeightQuantizer": _WeightQuantizer, "_RangeQuantizer": _RangeQuantizer})


def quantize_model(model, preserve_sparsity=False, activations="all"):
    """A QAT copy of a kerasllm model: every kerasllm layer and ``Dense`` head wrapped for fake quantization.

    Args:
        model: a functional kerasllm model (float32 policy).
        preserve_sparsity: keep the zeros of a pruned model through QAT
            (pruning-preserving QAT).
        activations: ``"all"``: every tensor between matrix products (see the
            module table); ``"outputs"``: only each layer's output and the FFN
            activation (the rest calibrated by the converter alone).

    An unannotated layer feeding an annotated one alone (the classifier's dropout)
    gets TF-MOT's output-only config, so its output is fake-quantized too.

    Returns:
        The quantization-aware model (new weights, copied from ``model``); compile
        and fine-tune it, then export with
        ``kerasllm.export.export_tflite(qat_model, path, quantize="int8", ...)``.

    Raises:
        ValueError: the model has no layer to quantize.

    Example:

    >>> from kerasllm.models import get_preset, token_classifier
    >>> model = token_classifier(get_preset("bert-tiny", vocab_size=100), num_labels=3)
    >>> qat = quantize_model(model)
    >>> [layer.name for layer in qat.layers if layer.name.startswith("quant_")]
    ['quant_embeddings', 'quant_encoder_layer_0', 'quant_encoder_layer_1', 'quant_classifier_dropout', 'quant_classifier']
    """
    q = _q()
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise ValueError("quantize_model needs a functional tf_keras model (kerasllm builders make those)")
    configs = {layer.name: _config_for(layer, preserve_sparsity, activations) for layer in model.layers}
    if not any(configs.values()):
        raise ValueError(f"model {model.name!r} has no kerasllm or Dense layer to quantize")

    from kerasllm.layers import Dropout

    def annotate(layer):
        config = configs.get(layer.name)
        if config is None:
            if isinstance(layer, Dropout):  # TF-MOT's registry knows Keras' own Dropout class only
                return keras.layers.Dropout.from_config(layer.get_config())
            return layer
        return q.quantize_annotate_layer(layer, config)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    with quantize_scope():
        qat = q.quantize_apply(annotated, quantize_scheme())
    if preserve_sparsity:
        _set_sparsity_masks(qat)
    return copy_model_attributes(model, qat)


def _set_sparsity_masks(qat_model):
    """Fix each weight's mask to its current non-zero pattern."""
    for layer in qat_model.layers:
        for weight, _, variables in getattr(layer, "_weight_vars", []):
            mask = variables.get("sparsity_mask") if isinstance(variables, dict) else None
            if isinstance(mask, tf.Variable):  # TF-MOT's own Dense quantizer holds a constant mask
                mask.assign(tf.cast(tf.not_equal(weight, 0), mask.dtype))


def float_copy(qat_model, build=None):
    """The QAT-trained weights in a plain (float, unwrapped) kerasllm model.

    ``build`` makes the empty plain model (default: :func:`kerasllm.compression.rebuild`
    from the model's ``kerasllm_config``/``kerasllm_task``).
    """
    from kerasllm.compression.saving import rebuild

    plain = (build or rebuild)(qat_model)
    by_name = {unwrap(layer).name: unwrap(layer) for layer in qat_model.layers}
    for layer in plain.layers:
        if layer.weights:
            layer.set_weights(by_name[layer.name].get_weights())
    return copy_model_attributes(qat_model, plain)


# ------------------------------------------------------------------ inspection


def _example_inputs(model, length=8):
    inputs = {}
    for name, tensor in zip(model.input_names, model.inputs):
        shape = [1] + [length if d is None else d for d in tensor.shape[1:]]
        inputs[name] = tf.ones(shape, tensor.dtype)
    return inputs


_PASS_THROUGH = {"Identity", "Cast", "Mul", "ReadVariableOp", "IdentityN"}


def _quantized_reads(handle):
    """True if every path from ``handle`` (a variable resource placeholder) reaches a FakeQuant op first."""
    frontier = list(handle.consumers())
    if not frontier:
        return None  # variable unused in this graph
    seen = set()
    while frontier:
        op = frontier.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.type.startswith("FakeQuantWithMinMax"):
            continue
        if op.type not in _PASS_THROUGH:
            return False
        for out in op.outputs:
            frontier.extend(out.consumers())
    return True


def _inference_graph(model, length):
    """The traced graph of ``model(inputs, training=False)`` in the form the int8 converter sees."""

    def forward(inputs):
        with portable_graph():
            return model(inputs, training=False)

    return tf.function(forward).get_concrete_function(_example_inputs(model, length)).graph


def unquantized_projections(model, length=8):
    """Names of projection weights whose inference-time use is not fake-quantized.

    Traces ``model(inputs, training=False)`` and follows each projection kernel
    (attention, feed-forward, heads, embedding tables) from its variable read to
    the op that uses it: the kernel counts as quantized only if a
    ``FakeQuantWithMinMaxVars*`` op sits on every such path. A float model lists
    all its projections; a model from :func:`quantize_model` lists none.
    """
    graph = _inference_graph(model, length)
    captured = {id(external): internal for external, internal in graph.captures}
    missing = []
    for top in model.layers:
        layer = unwrap(top)
        paths = EmbeddingQuantizeConfig().weight_paths(layer) if _is_embedding(layer) else projection_paths(layer)
        for path in paths:
            variable = _variable_at(top, layer, path)
            internal = captured.get(id(variable.handle)) if variable is not None else None
            if internal is None or not _quantized_reads(internal):
                missing.append(display_name(layer, path))
    return missing


def _is_embedding(layer):
    from kerasllm.layers import TransformerEmbedding

    return isinstance(layer, TransformerEmbedding)


def _variable_at(top, layer, path):
    """The variable at ``path``: after a QAT wrapper's call the attribute holds the fake-quantized
    tensor, so the wrapper's own (variable, quantizer, ranges) list is consulted first."""
    weight_vars = [weight for weight, _, _ in getattr(top, "_weight_vars", [])]
    if weight_vars:
        config = top.quantize_config
        paths = config.weight_paths(layer) if hasattr(config, "weight_paths") else list(config.weight_attrs)
        by_path = dict(zip(paths, weight_vars))
        if path in by_path:
            return by_path[path]
    value = resolve(layer, path)
    return value if isinstance(value, tf.Variable) else None


def fake_quant_count(model, length=8):
    """Number of FakeQuant ops in the inference graph of ``model``."""
    graph = _inference_graph(model, length)
    return sum(op.type.startswith("FakeQuantWithMinMax") for op in graph.get_operations())


def tflite_weight_sparsity(path, shapes):
    """Zero fraction of the constant tensors of a ``.tflite`` file whose shape is in ``shapes``.

    TFLite stores a ``[in, out]`` kernel transposed for FullyConnected, so both
    orientations of each shape match. Returns ``{shape tuple: [sparsity, ...]}``.
    """
    from ai_edge_litert import interpreter as litert

    wanted = {tuple(s) for s in shapes} | {tuple(reversed(s)) for s in shapes}
    interpreter = litert.Interpreter(model_path=path)
    found = {}
    for detail in interpreter.get_tensor_details():
        shape = tuple(int(d) for d in detail["shape"])
        if shape not in wanted:
            continue
        try:
            value = interpreter.get_tensor(detail["index"])
        except ValueError:
            continue  # not a constant buffer
        found.setdefault(shape, []).append(float(np.mean(value == 0)))
    return found
