"""kerasllm: Transformer language models on TensorFlow/Keras, from the layer to the phone.

Every layer and model subclasses ``tf_keras`` (Keras 2 API) so that TF-MOT can
prune and quantize it; Keras 3 / KerasHub is used only outside model graphs.
"""
__version__ = "0.1.0"

import importlib as _importlib

_SUBPACKAGES = (
    "layers", "models", "tokenizers", "data", "training", "compression",
    "generation", "checkpoints", "evaluation", "cli", "export",
)


def __getattr__(name):
    """Import subpackages on first use (``kerasllm.models``...), so ``import kerasllm`` stays light."""
    if name in _SUBPACKAGES:
        return _importlib.import_module(f"kerasllm.{name}")
    raise AttributeError(f"module 'kerasllm' has no attribute {name!r}")
