"""Fused element-wise training: matrix products in TensorFlow, everything around them in XLA.

On a CPU with AMX (Intel Sapphire Rapids and later), TensorFlow's oneDNN kernels
multiply bfloat16 matrices on the tile unit, about 4x faster than float32 (1.1-1.5
TFLOP/s against about 300 GFLOP/s on the 2-core machine of bench/speed_notes.md).
XLA's CPU backend does not use AMX: under ``jit_compile=True`` a bfloat16 product
runs no faster than a float32 one. Without XLA, though, the thousands of small
element-wise ops of a Transformer step (bias, GELU, softmax, dropout scaling,
layer norm, residuals, the optimizer update) each run as their own kernel, and
they cost more than the products.

``fuse_elementwise`` takes both halves: the train step is traced inside a
``tf.xla.experimental.jit_scope`` whose filter (:func:`xla_fusible`) marks every
op except the matrix products (and random numbers, variables, gathers, control
flow, collectives and checks, which TensorFlow runs better or XLA must not
swallow) for XLA, forward and backward alike. TensorFlow's clustering pass then
compiles each run of marked ops between two products into one XLA kernel. The
optimizer's update of each variable becomes one XLA kernel too (Keras's
``_update_step_xla``, which tf_keras otherwise uses only on a GPU).

Measured on the MiniLM-shaped classifier of ``bench/train_throughput.py`` (bfloat16,
one run each): graph mode 2,979 tokens/s, fused 4,088; float32 with full XLA
2,944. In float32 fusing does not pay there (2,357), nor does it on a CPU
without AMX, so :func:`resolve_fusion` turns it on only for bfloat16 on an AMX CPU.
Nor does it for small models: compiling the clusters of ``bert-tiny`` (hidden 128)
for its few batch shapes took longer than its whole float32 fine-tune (271 s
against 73 s for the embedded default), so "auto" asks for a hidden size of at
least :data:`MIN_WIDTH`.
"""
import contextlib
import functools
import os

import tensorflow as tf

# Products TensorFlow hands to oneDNN (AMX for bfloat16): they stay outside the clusters.
LIBRARY_OPS = frozenset({
    "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum", "_FusedMatMul", "_MklMatMul",
    "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "DepthwiseConv2dNative",
})
# Ops whose names contain one of these are never marked: TensorFlow's Philox kernels beat
# XLA's expansion (speed note 1), variable and gather/scatter ops belong to the graph
# (embedding lookups and their row gradients), control flow and function calls may hold
# products, collectives synchronise replicas, and XLA compiles assertions away.
KEPT_OUT_WORDS = (
    "Random", "Variable", "Resource", "Assign", "Gather", "Scatter", "Segment", "Unique",
    "Collective", "Nccl", "AllReduce", "Assert", "CheckNumerics", "Print", "Call", "If", "While", "Case",
)
KEPT_OUT_OPS = frozenset({"Placeholder", "Const", "Identity", "IdentityN", "NoOp", "Switch", "Merge"})
# Hidden size from which "auto" trains in bfloat16 with fusion on an AMX CPU (MiniLM: 384).
MIN_WIDTH = 256


def xla_fusible(node_def):
    """True when the op of ``node_def`` may join an XLA cluster under :func:`fused_elementwise`.

    Example:

    >>> from tensorflow.core.framework import node_def_pb2
    >>> [xla_fusible(node_def_pb2.NodeDef(op=op)) for op in ("Mul", "Erf", "MatMul", "StatelessRandomUniformV2")]
    [True, True, False, False]
    """
    op = node_def.op
    if op in LIBRARY_OPS or op in KEPT_OUT_OPS:
        return False
    return not any(word in op for word in KEPT_OUT_WORDS)


def compile_clusters_at_first_run():
    """Turn off TensorFlow's lazy compilation of XLA clusters (for this process).

    By default a cluster that is not marked must-compile (as those of
    :func:`fused_elementwise` are not) runs on TensorFlow's own kernels for its
    first executions with each new input shape and only then is compiled. In bfloat16 the
    two kernels round differently, so a step's result would depend on how often its
    shape had been seen: a run resumed from a checkpoint would not repeat the
    uninterrupted one. Returns the previous setting, or None when this TensorFlow has
    no such switch.
    """
    try:
        from tensorflow.python.client import pywrap_tf_session
    except ImportError:  # pragma: no cover - TensorFlow without the private module
        return None
    setter = getattr(pywrap_tf_session, "TF_SetXlaEnableLazyCompilation", None)
    return None if setter is None else setter(False)


@contextlib.contextmanager
def fused_elementwise():
    """Mark the ops traced inside for XLA clustering, except those :func:`xla_fusible` keeps out.

    Use it around graph construction (inside a ``tf.function``), forward pass and
    gradient together; :func:`kerasllm.training.install_train_step` with
    ``fuse_elementwise=True`` does this for ``model.fit``. It also calls
    :func:`compile_clusters_at_first_run`, so every step computes with the same kernels.
    """
    compile_clusters_at_first_run()
    with tf.xla.experimental.jit_scope(compile_ops=xla_fusible, separate_compiled_gradients=False):
        yield


@functools.lru_cache(maxsize=1)
def cpu_has_amx_bf16():
    """True when this machine's CPU reports the AMX bfloat16 unit (Linux ``/proc/cpuinfo``).

    ``KERASLLM_AMX=0`` or ``1`` overrides the answer (to compare both settings on one machine).
    """
    forced = os.environ.get("KERASLLM_AMX")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def _accelerator_present():
    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))


def _amx_worth_it(xla, width):
    wide = width is None or width >= MIN_WIDTH
    return wide and not xla and not _accelerator_present() and cpu_has_amx_bf16()


def resolve_precision(mixed_precision, tpu=False, xla=False, width=None):
    """The compute type ``"auto"`` stands for: ``"bfloat16"`` on a TPU, and on an AMX CPU
    for a model of hidden size ``width`` >= :data:`MIN_WIDTH` (None: unknown, taken as wide)
    unless the step is compiled whole with XLA (whose CPU products do not use AMX);
    ``"none"`` elsewhere. Any other value is returned as it is."""
    if mixed_precision != "auto":
        return mixed_precision
    if tpu:
        return "bfloat16"
    return "bfloat16" if _amx_worth_it(xla, width) else "none"


def resolve_fusion(fuse_elementwise, mixed_precision, tpu=False, xla=False, width=None):
    """Whether to fuse: ``"on"``/``"off"`` as given; ``"auto"`` is on for bfloat16 on an AMX
    CPU without XLA, for a model of hidden size ``width`` >= :data:`MIN_WIDTH` (or unknown).

    ``mixed_precision`` is the resolved compute type (after :func:`resolve_precision`).
    Fusing has no effect under full XLA (the step is one cluster already) and is an
    error on a TPU, which compiles every step whole.
    """
    if fuse_elementwise not in ("auto", "on", "off"):
        raise ValueError(f"fuse_elementwise must be auto, on or off, got {fuse_elementwise!r}")
    if fuse_elementwise == "auto":
        return mixed_precision == "bfloat16" and not tpu and _amx_worth_it(xla, width)
    if fuse_elementwise == "on" and (tpu or xla):
        raise ValueError("--fuse-elementwise on applies to graph-mode training; the step is already compiled "
                         f"whole {'on a TPU' if tpu else 'with --xla'}")
    return fuse_elementwise == "on"
