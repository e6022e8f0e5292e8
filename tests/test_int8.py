"""TFLite export of graphs that hold custom gradients (kerasllm.export.tflite).

A ``tf.custom_gradient`` whose gradient closure captures a model input (as the
dense-gradient embedding gather does) stops ``tf.saved_model.save`` unless custom
gradients are left out of the temporary SavedModel the converter reads; the
TFLite model has no gradients, so its outputs must still equal the Keras model's.
"""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from kerasllm.export import TFLiteRunner, export_tflite


def _gather_with_custom_gradient(table, ids):
    @tf.custom_gradient
    def gather(t):
        def grad(upstream):
            rows = tf.reshape(upstream, [-1, tf.shape(upstream)[-1]])
            return tf.math.unsorted_segment_sum(rows, tf.reshape(ids, [-1]), tf.shape(t)[0])

        return tf.gather(t, ids), grad

    return gather(table)


class _Embed(keras.layers.Layer):
    def build(self, input_shape):
        self.table = self.add_weight(name="table", shape=(20, 4), initializer="random_normal")

    def call(self, ids):
        return _gather_with_custom_gradient(tf.convert_to_tensor(self.table), ids)


def test_tflite_export_of_a_custom_gradient_that_captures_the_input(tmp_path):
    tf.keras.utils.set_random_seed(0)
    ids = keras.Input(shape=(None,), dtype=tf.int32, name="input_ids")
    model = keras.Model({"input_ids": ids}, keras.layers.Dense(3)(_Embed()(ids)))
    report = export_tflite(model, tmp_path / "m.tflite")
    x = np.array([[1, 5, 19, 0], [7, 7, 2, 3]], np.int32)
    got = TFLiteRunner(report.path)({"input_ids": x})
    (out,) = got.values()
    # Known answer: the float graph is gather then dense, recomputed in NumPy.
    table = model.layers[1].table.numpy()
    kernel, bias = (w.numpy() for w in model.layers[2].weights)
    np.testing.assert_allclose(out, table[x] @ kernel + bias, atol=1e-5)
