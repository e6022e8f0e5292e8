"""Private helpers shared by kerasllm layers."""
import contextlib
import functools

import numpy as np
import tensorflow as tf
import tf_keras as keras


def in_xla_context():
    """True while tracing a function that XLA compiles (``jit_compile=True``)."""
    from tf_keras.src.utils import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


_PORTABLE_DEPTH = [0]


@contextlib.contextmanager
def portable_graph():
    """Trace kerasllm layers with the ops every exporter and quantizer takes.

    Outside it, layers called for inference (``training`` None or False) compute the
    same function in the forms TensorFlow's CPU graph optimizer fuses into oneDNN
    kernels: attention as ``softmax(q k^T * scale + additive mask)`` without the
    renormalisation integer TFLite needs (one ``_MklFusedBatchMatMulV2``), the
    feed-forward network as 2-D ``MatMul + BiasAdd + GELU`` (one
    ``_MklNativeFusedMatMul``), sliding-window attention as a loop over chunks of
    blocks (:func:`kerasllm.layers.local_attention.chunked_local_attention`). Inside,
    they use the forms TFLite (including its
    int8 and 16x8 kernels), tf2onnx and quantization-aware training are built and
    tested for; training always does. The exporters of ``kerasllm/export`` trace the
    model inside this context; it only matters while a function is being traced.

    Example:

    >>> from kerasllm.layers._utils import portable_graph, tracing_portable_graph
    >>> with portable_graph():
    ...     tracing_portable_graph()
    True
    >>> tracing_portable_graph()
    False
    """
    _PORTABLE_DEPTH[0] += 1
    try:
        yield
    finally:
        _PORTABLE_DEPTH[0] -= 1


def tracing_portable_graph():
    """True inside :func:`portable_graph`."""
    return _PORTABLE_DEPTH[0] > 0


def is_inference(training):
    """True for a ``training`` argument that is None or a Python/NumPy false value (not a tensor)."""
    return training is None or (isinstance(training, (bool, int, np.bool_)) and not training)


def clone_initializer(initializer):
    """A fresh copy of ``initializer``.

    tf_keras initializers without a seed return the same values every time one
    instance is called, so each weight gets its own copy.
    """
    initializer = keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())


def build_sublayer(layer, input_shape):
    """Build ``layer`` under its own name scope so its weights are named ``parent/layer/w``.

    (Building a sublayer directly from the parent's ``build`` would otherwise name its
    weights ``parent/w`` and collide in H5 files.)
    """
    with tf.name_scope(layer.name):
        layer.build(input_shape)


class DeferredInitializers:
    """Variable creator that makes Keras weights as zeros and keeps their initializers.

    Used through :func:`deferred_initialization`. Only weights made by ``add_weight``
    with an initializer (a lazy ``functools.partial`` of it) are deferred; every other
    variable (random-generator states, ...) is created as usual.
    """

    def __init__(self):
        self._pending = {}

    def __call__(self, next_creator, **kwargs):
        init, shape = kwargs.get("initial_value"), kwargs.get("shape")
        deferrable = (
            isinstance(init, functools.partial)
            and "layout" not in init.keywords
            and shape is not None
            and tf.TensorShape(shape).is_fully_defined()
        )
        if not deferrable:
            return next_creator(**kwargs)
        dtype = tf.as_dtype(kwargs.get("dtype") or tf.float32)
        kwargs["initial_value"] = functools.partial(tf.zeros, tf.TensorShape(shape), dtype)
        variable = next_creator(**kwargs)
        self._pending[variable.ref()] = (variable, init)
        return variable

    def finish(self, assigned=()):
        """Run the kept initializer of every deferred weight not in ``assigned``.

        Returns the variables that were initialised.
        """
        # Under a mixed-precision policy a layer's weight is an AutoCastVariable around
        # the variable this creator made: either may be passed, both name the weight.
        done = set()
        for v in assigned:
            done.add(v.ref())
            inner = getattr(v, "_variable", None)
            if isinstance(inner, tf.Variable):
                done.add(inner.ref())
        initialised = []
        for ref, (variable, init) in list(self._pending.items()):
            if ref not in done:
                variable.assign(init())
                initialised.append(variable)
        self._pending.clear()
        return initialised


@contextlib.contextmanager
def deferred_initialization():
    """Build weights as zeros and run their initializers only where asked.

    For models whose weights are about to be overwritten (checkpoint import): the
    truncated-normal draws for BERT's embedding and kernels cost seconds that the
    load would throw away. Call ``finish(assigned)`` on the yielded
    :class:`DeferredInitializers` after assigning, so every weight that was not
    assigned still gets its own initializer (a fresh task head stays random).

    Example:

    >>> with deferred_initialization() as deferred:
    ...     layer = keras.layers.Dense(3)
    ...     layer.build((None, 2))
    >>> float(abs(layer.kernel.numpy()).sum())
    0.0
    >>> _ = layer.bias.assign([1.0, 2.0, 3.0])
    >>> [v.name for v in deferred.finish(assigned=[layer.bias])]
    ['kernel:0']
    >>> float(abs(layer.kernel.numpy()).sum()) > 0
    True
    """
    deferred = DeferredInitializers()
    with tf.variable_creator_scope(deferred):
        yield deferred


def _quant_point(x):
    return x


# TF-MOT's QuantizeAwareActivation fake-quantizes the output of an activation whose
# name is "linear": a quantization-aware copy of a layer swaps its own wrapper in here.
_quant_point.__name__ = "linear"


class QuantPoints:
    """Named tensors inside a layer that quantization-aware training may fake-quantize.

    Each name in ``QUANT_POINTS`` is an attribute ``qp_<name>``: an identity
    function (named ``linear``) that ``call`` passes the tensor through, so a plain
    model computes exactly as without it. :func:`kerasllm.compression.quantize_model`
    replaces the attribute, in its copy of the layer only, by TF-MOT's
    fake-quantizing activation, which gives the int8 TFLite converter the trained
    range of that tensor (see :mod:`kerasllm.compression.qat`).
    """

    QUANT_POINTS = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls.QUANT_POINTS:
            setattr(cls, "qp_" + name, staticmethod(_quant_point))

    def quant_points(self):
        """The names in ``QUANT_POINTS`` this layer's configuration computes."""
        return list(self.QUANT_POINTS)

    def quantization_aware(self):
        """True when a quantization-aware copy has replaced one of this layer's points by a fake-quantizer."""
        return any(getattr(self, "qp_" + name, _quant_point) is not _quant_point for name in self.QUANT_POINTS)

    def runtime_fast_path(self):
        """True when ``call`` may use TensorFlow-only fast ops (see :func:`portable_graph`)."""
        return not tracing_portable_graph() and not self.quantization_aware()

    def quant_point(self, name, x):
        return getattr(self, "qp_" + name, _quant_point)(x)
