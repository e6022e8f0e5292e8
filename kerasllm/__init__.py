"""kerasllm: Transformer language models on TensorFlow/Keras, from the layer to the phone.

Every layer and model subclasses ``tf_keras`` (Keras 2 API) so that TF-MOT can
prune and quantize it; Keras 3 / KerasHub is used only outside model graphs.
"""
__version__ = "0.1.0"

from kerasllm import layers, models  # noqa: E402,F401
