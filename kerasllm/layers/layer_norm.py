"""Layer normalization whose statistics are plain means and products (quantizes to 16x8 TFLite)."""
import functools
import os

import tensorflow as tf
import tf_keras as keras

from kerasllm.layers._utils import QuantPoints, in_xla_context, is_inference

# Name scope of the normalisation ops (mean, centring, variance, reciprocal square root,
# scale and shift). ``kerasllm.export.export_tflite(quantize="int8")`` keeps the ops under
# it in float by default: int8 statistics cost MiniLM/WNUT-17 QAT 1.3 F1 points.
FLOAT_SCOPE = "layer_norm_float"
# oneDNN's layer-norm kernel, used for float32 inference in the TensorFlow runtime (not exports).
_ONEDNN_OP = "_MklLayerNorm"


def _onednn_enabled():
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # pragma: no cover - other TensorFlow builds
        return False


@functools.lru_cache(maxsize=1)
def _onednn_layer_norm_registered():
    from tensorflow.python.framework import op_def_registry

    return _onednn_enabled() and op_def_registry.get(_ONEDNN_OP) is not None


def onednn_layer_norm_usable():
    """True when inference may normalise with oneDNN's layer-norm kernel (``_MklLayerNorm``).

    That kernel is what TensorFlow's own graph optimizer substitutes for the layer
    norms it recognises (Keras' fused form); it recognises none of the unfused forms,
    ours included, so :class:`LayerNorm` asks for the kernel itself. It needs a
    oneDNN build of TensorFlow (x86 Linux/Windows pip wheels), a traced graph
    (``tf.function``, ``predict``) not compiled by XLA (the op has no XLA kernel), and no GPU or TPU (a CPU-only kernel).
    ``KERASLLM_ONEDNN_LAYER_NORM=0`` turns it off.
    """
    if os.environ.get("KERASLLM_ONEDNN_LAYER_NORM") == "0" or not _onednn_layer_norm_registered():
        return False
    if tf.executing_eagerly() or in_xla_context():  # graph op only (eager calls keep the plain form)
        return False
    return not (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def _onednn_layer_norm(x, gamma, beta, epsilon):
    """``_MklLayerNorm(x, gamma, beta)`` over the last axis of a rank-2 or rank-3 float32 ``x``."""
    from tensorflow.python.framework import op_def_library

    op = op_def_library._apply_op_helper(  # a registered op without a public Python wrapper
        _ONEDNN_OP, name="onednn_layer_norm", x=x, scale=tf.cast(gamma, x.dtype), offset=tf.cast(beta, x.dtype),
        epsilon=float(epsilon),
    )[2]
    return op.outputs[0]


@tf.RegisterGradient(_ONEDNN_OP)
def _onednn_layer_norm_grad(op, dy):
    """Gradients of layer normalisation (TensorFlow registers none for the oneDNN kernel)."""
    x, gamma = op.inputs[0], op.inputs[1]
    epsilon = op.get_attr("epsilon")
    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    centred = x - mean
    rstd = tf.math.rsqrt(tf.reduce_mean(centred * centred, axis=-1, keepdims=True) + epsilon)
    normed = centred * rstd
    outer = list(range(x.shape.rank - 1))
    dnormed = dy * gamma
    dx = rstd * (
        dnormed - tf.reduce_mean(dnormed, axis=-1, keepdims=True)
        - normed * tf.reduce_mean(dnormed * normed, axis=-1, keepdims=True)
    )
    return dx, tf.reduce_sum(dy * normed, axis=outer), tf.reduce_sum(dy, axis=outer)


@keras.saving.register_keras_serializable(package="kerasllm")
class LayerNorm(QuantPoints, keras.layers.LayerNormalization):
    """``keras.layers.LayerNormalization`` computed as ``mean((x - mean(x))**2)`` with a multiply.

    The same layer as Keras' (same arguments, ``gamma``/``beta`` weights, config and
    checkpoint names), so models and Hugging Face / Google checkpoints load into it
    unchanged. Only ``call`` differs: the mean and the variance of the centred
    input are ``reduce_mean`` ops and the square is a ``MUL``, where Keras uses
    ``tf.nn.moments`` (a ``SQUARED_DIFFERENCE``) or a fused batch norm. TFLite's
    int16-activation (16x8) kernels include ``MUL`` and ``MEAN`` but no
    ``SQUARED_DIFFERENCE``, so only this form runs in a ``quantize="int16x8"``
    model. The normalisation ops sit under the name scope :data:`FLOAT_SCOPE`, by which
    an int8 TFLite export finds them to keep them in float. Float16/bfloat16 inputs (mixed precision) get their statistics and
    normalisation in float32 and are cast back, as in Keras.

    Args:
        axis: axis or axes to normalise over (default the last).
        epsilon: added to the variance before the square root.
        center, scale, beta_initializer, gamma_initializer, ...: as in
            ``keras.layers.LayerNormalization``.

    Example:

    >>> import numpy as np
    >>> norm = LayerNorm(epsilon=1e-12, name="norm")
    >>> x = np.array([[1.0, 2.0, 3.0, 6.0]], "float32")
    >>> np.round(norm(x).numpy(), 4)
    array([[-1.069 , -0.5345,  0.    ,  1.6036]], dtype=float32)
    >>> [w.name for w in norm.weights]
    ['norm/gamma:0', 'norm/beta:0']
    """

    QUANT_POINTS = ("output",)  # what a quantization-aware copy fake-quantizes (kerasllm.compression.qat)

    def call(self, inputs, training=None):
        if isinstance(inputs, tf.RaggedTensor):
            return super().call(inputs)
        inputs = tf.cast(inputs, self.compute_dtype)
        out_dtype = inputs.dtype
        x = tf.cast(inputs, tf.float32) if out_dtype in (tf.float16, tf.bfloat16) else inputs
        ndims = x.shape.rank
        axes = [a % ndims for a in self.axis]
        if (
            x.dtype == tf.float32 and ndims in (2, 3) and axes == [ndims - 1] and self.scale and self.center
            and is_inference(training) and self.runtime_fast_path() and onednn_layer_norm_usable()
        ):
            outputs = tf.cast(_onednn_layer_norm(x, self.gamma, self.beta, self.epsilon), out_dtype)
            outputs.set_shape(inputs.shape)
            return outputs
        with tf.name_scope(FLOAT_SCOPE):  # the ops an int8 TFLite export can keep in float
            centred = x - tf.reduce_mean(x, axis=axes, keepdims=True)
            variance = tf.reduce_mean(centred * centred, axis=axes, keepdims=True)
            outputs = centred * tf.math.rsqrt(variance + self.epsilon)
            shape = [x.shape[a] if a in axes else 1 for a in range(ndims)]
            if self.scale:
                outputs = outputs * self._broadcast(self.gamma, shape, axes, x.dtype)
            if self.center:
                outputs = outputs + self._broadcast(self.beta, shape, axes, x.dtype)
        outputs = self.quant_point("output", tf.cast(outputs, out_dtype))
        outputs.set_shape(inputs.shape)
        return outputs

    @staticmethod
    def _broadcast(weight, shape, axes, dtype):
        weight = tf.cast(weight, dtype)
        if axes == [len(shape) - 1]:
            return weight
        return tf.reshape(weight, shape)
