"""SavedModel export with a ``serving_default`` signature, and a runner.

Layout of ``export_savedmodel(model, "out/ner")``::

    out/ner/saved_model.pb        signature serving_default: named inputs -> {"logits": ...}
    out/ner/variables/...
    out/ner/assets.extra/<name>   each asset (labels.json, vocab.txt), when given

Only the serving function and the model's variables are saved (not the Keras
object graph), so the folder loads with plain ``tf.saved_model.load`` and serves
with TF Serving; use :func:`kerasllm.models.save_pretrained` to keep a trainable
Keras model.
"""
import os

import numpy as np
import tensorflow as tf

from kerasllm._io import atomic_replace_dir
from kerasllm.export._common import (
    ExportReport,
    check_assets,
    check_max_length,
    file_size,
    prepare_inputs,
    serving_function,
    write_assets,
)

SERVING = "serving_default"
ASSETS_FOLDER = "assets.extra"


def export_savedmodel(model, out_dir, max_length=None, assets=None):
    """Write ``model`` as a SavedModel folder with a ``serving_default`` signature.

    The folder is built beside ``out_dir`` under a temporary name and renamed into
    place, so a failure leaves no partial folder (and an existing ``out_dir`` is
    replaced only once the new one is complete).

    Args:
        model: a ``tf_keras`` functional model with named inputs.
        out_dir: the SavedModel folder.
        max_length: fix the sequence length; ``None`` keeps it dynamic.
        assets: as in :func:`kerasllm.export.export_tflite`; written to
            ``<out_dir>/assets.extra/<name>``.

    Returns:
        :class:`ExportReport`.
    """
    checked_assets = check_assets(assets)
    check_max_length(model, max_length)
    serve, _ = serving_function(model, max_length)
    return save_serving(serve, model, out_dir, checked_assets)


def save_serving(serve, model, out_dir, checked_assets):
    """Save ``serve`` (a dict-in ``tf.function``) and ``model``'s variables as ``out_dir``, atomically.

    ``checked_assets`` (from ``check_assets``) go to ``<out_dir>/assets.extra/``.
    Returns the :class:`ExportReport`.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    concrete = serve.get_concrete_function()

    def build(tmp):
        module = tf.Module()
        module.serve = serve
        module.model_variables = list(model.variables)
        tf.saved_model.save(module, tmp, signatures={SERVING: concrete})
        if checked_assets:
            os.makedirs(os.path.join(tmp, ASSETS_FOLDER), exist_ok=True)
            write_assets(checked_assets, lambda name: os.path.join(tmp, ASSETS_FOLDER, name))

    atomic_replace_dir(build, out_dir)
    return ExportReport(
        path=out_dir,
        format="savedmodel",
        size_bytes=file_size(out_dir),
        assets={name: os.path.join(out_dir, ASSETS_FOLDER, name) for name in checked_assets},
        signatures={
            SERVING: {
                "inputs": sorted(concrete.structured_input_signature[0][0]),
                "outputs": sorted(concrete.structured_outputs),
            }
        },
    )


class SavedModelRunner:
    """Run a SavedModel signature with numpy inputs; returns a dict of numpy arrays."""

    def __init__(self, path, signature_key=SERVING):
        path = os.fspath(path)
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise FileNotFoundError(f"no SavedModel at {path} (saved_model.pb missing)")
        self.path = path
        self._loaded = tf.saved_model.load(path)
        if signature_key not in self._loaded.signatures:
            raise ValueError(
                f"{path}: no signature {signature_key!r}; signatures: {sorted(self._loaded.signatures)}"
            )
        self._function = self._loaded.signatures[signature_key]
        _, kwargs = self._function.structured_input_signature
        self._expected = {
            name: (spec.dtype.as_numpy_dtype, list(spec.shape)) for name, spec in kwargs.items()
        }
        self.output_names = sorted(self._function.structured_outputs)

    @property
    def input_names(self):
        return sorted(self._expected)

    def __call__(self, inputs):
        feed = prepare_inputs(inputs, self._expected, self.path)
        outputs = self._function(**{k: tf.constant(v) for k, v in feed.items()})
        return {name: np.asarray(value) for name, value in outputs.items()}
