"""Layer normalization whose statistics are plain means and products (quantizes to 16x8 TFLite)."""
import tensorflow as tf
import tf_keras as keras

from kerasllm.layers._utils import QuantPoints

# Name scope of the normalisation ops (mean, centring, variance, reciprocal square root,
# scale and shift). ``kerasllm.export.export_tflite(quantize="int8")`` keeps the ops under
# it in float by default: int8 statistics cost MiniLM/WNUT-17 QAT 1.3 F1 points.
FLOAT_SCOPE = "layer_norm_float"


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

    def call(self, inputs):
        if isinstance(inputs, tf.RaggedTensor):
            return super().call(inputs)
        inputs = tf.cast(inputs, self.compute_dtype)
        out_dtype = inputs.dtype
        x = tf.cast(inputs, tf.float32) if out_dtype in (tf.float16, tf.bfloat16) else inputs
        ndims = x.shape.rank
        axes = [a % ndims for a in self.axis]
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
