"""Private helpers shared by kerasllm layers."""
import tensorflow as tf
import tf_keras as keras


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
