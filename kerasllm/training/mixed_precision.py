"""Global mixed-precision switch for kerasllm models.

Call :func:`set_mixed_precision` *before* building the model: tf_keras layers
take the global policy when they are created. kerasllm models keep their
logits (and so the loss and softmax) in float32 whatever the policy.

Loss scaling: with ``"float16"``, ``model.compile`` in tf_keras wraps the
optimizer in ``tf_keras.mixed_precision.LossScaleOptimizer`` by itself (the
model's policy is ``mixed_float16``), so nothing else is needed, and
:func:`kerasllm.training.install_train_step` scales and unscales through it.
``"bfloat16"`` has float32's exponent range and needs no loss scaling.
"""
import tf_keras as keras

MODES = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def set_mixed_precision(mode):
    """Set tf_keras's global dtype policy: ``"none"``, ``"float16"`` or ``"bfloat16"``.

    Returns:
        The new ``tf_keras.mixed_precision.Policy``.

    Example:

    >>> set_mixed_precision("bfloat16").name
    'mixed_bfloat16'
    >>> set_mixed_precision("none").name
    'float32'
    """
    if mode is None:
        mode = "none"
    if not isinstance(mode, str) or mode.lower() not in MODES:
        raise ValueError(f"mixed precision mode {mode!r} is invalid; allowed values: {list(MODES)}")
    keras.mixed_precision.set_global_policy(MODES[mode.lower()])
    return keras.mixed_precision.global_policy()


def needs_loss_scaling(model):
    """True when ``model`` computes in float16, so its optimizer must be a ``LossScaleOptimizer``."""
    return getattr(model.dtype_policy, "name", "") == "mixed_float16"
