"""One call to seed every random number generator a training run touches."""
import os

import tensorflow as tf
import tf_keras as keras


def set_seed(seed, deterministic_ops=False):
    """Seed Python's ``random``, NumPy, TensorFlow and tf_keras from one integer.

    ``tf_keras.utils.set_random_seed`` seeds ``random``, ``numpy.random`` and
    TensorFlow's global seed; ``PYTHONHASHSEED`` is set for child processes
    (it cannot change the hash seed of the running interpreter).

    Args:
        seed: a non-negative integer.
        deterministic_ops: also call ``tf.config.experimental.enable_op_determinism()``,
            so that ops with non-deterministic kernels (mostly on GPU) run
            deterministically, or raise. This is process-wide and cannot be
            undone through a public API; it slows some GPU ops down.

    Example:

    >>> set_seed(42)
    >>> import numpy as np
    >>> a = np.random.rand(); set_seed(42); a == np.random.rand()
    True
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()
