"""Graph surgery that makes a traced serving function convertible to TFLite.

The TFLite converter lowers ``x[:, None, None, :]`` (a ``StridedSlice`` with a
``new_axis_mask``) to a ``Reshape`` with a constant shape. When more than one
dimension of ``x`` is unknown, as with a ``[batch, seq]`` padding mask where both
are dynamic, that constant cannot be formed and conversion stops with
``'tf.StridedSlice' op is neither a custom op nor a flex op``. kerasllm's
``expand_attention_mask`` (kerasllm/layers/masks.py) indexes masks that way.

:func:`convertible_function` freezes the function's variables into constants and
replaces every such slice that only inserts axes (all other dims taken whole,
stride 1) by the equivalent chain of ``ExpandDims`` ops, which TFLite supports
with any number of dynamic dims. Other slices are left as they are.
"""
import tensorflow as tf
from tensorflow.python.framework import tensor_util
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2


def _bits(mask, count):
    return [bool((mask >> i) & 1) for i in range(count)]


def _inserted_axes(node, constants):
    """Output axes added by a StridedSlice that does nothing but insert axes, else None."""
    if node.op != "StridedSlice":
        return None
    attr = node.attr
    if not attr["new_axis_mask"].i or attr["ellipsis_mask"].i or attr["shrink_axis_mask"].i:
        return None
    strides = constants.get(node.input[3].split(":")[0])
    if strides is None:
        return None
    count = len(strides)
    new_axis = _bits(attr["new_axis_mask"].i, count)
    whole = [b and e for b, e in zip(_bits(attr["begin_mask"].i, count), _bits(attr["end_mask"].i, count))]
    for i in range(count):
        if not new_axis[i] and not (whole[i] and strides[i] == 1):
            return None
    # Without ellipsis or shrink, spec entry i is output axis i.
    return [i for i in range(count) if new_axis[i]]


def _expand_dims_chain(node, axes):
    """NodeDefs replacing ``node``; the last one keeps its name so consumers still connect."""
    nodes = []
    source = node.input[0]
    for k, axis in enumerate(axes):
        axis_node = tf.compat.v1.NodeDef(name=f"{node.name}/_expand_axis_{k}", op="Const")
        axis_node.attr["dtype"].type = tf.int32.as_datatype_enum
        axis_node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(axis, tf.int32))
        last = k == len(axes) - 1
        expand = tf.compat.v1.NodeDef(
            name=node.name if last else f"{node.name}/_expand_{k}",
            op="ExpandDims",
            input=[source, axis_node.name],
        )
        expand.attr["T"].CopyFrom(node.attr["T"])
        expand.attr["Tdim"].type = tf.int32.as_datatype_enum
        if node.device:
            expand.device = node.device
        nodes += [axis_node, expand]
        source = expand.name
    return nodes


def rewrite_axis_insertions(graph_def):
    """Return ``(graph_def, count)`` with axis-inserting slices replaced by ``ExpandDims``."""
    constants = {
        n.name: tensor_util.MakeNdarray(n.attr["value"].tensor)
        for n in graph_def.node
        if n.op == "Const"
    }
    nodes, count = [], 0
    for node in graph_def.node:
        axes = _inserted_axes(node, constants)
        if axes:
            nodes += _expand_dims_chain(node, axes)
            count += 1
        else:
            nodes.append(node)
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    del out.node[:]
    out.node.extend(nodes)
    return out, count


def convertible_function(function, specs):
    """Freeze and rewrite ``function`` (a ``tf.function`` over a dict of ``specs``).

    Returns a new ``tf.function`` with the same dict-in/dict-out signature whose
    graph holds constants instead of variables and no axis-inserting slices.
    """
    concrete = function.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def, _ = rewrite_axis_insertions(frozen.graph.as_graph_def())
    feeds = [t.name for t in frozen.inputs]
    fetches = [t.name for t in frozen.outputs]

    def _import():
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    pruned = wrapped.prune(
        feeds=[wrapped.graph.get_tensor_by_name(n) for n in feeds],
        fetches=[wrapped.graph.get_tensor_by_name(n) for n in fetches],
    )
    order = [n.split(":")[0] for n in feeds]
    structure = concrete.structured_outputs

    @tf.function(input_signature=[specs])
    def serve(inputs):
        flat = pruned(*[inputs[name] for name in order])
        return tf.nest.pack_sequence_as(structure, list(flat))

    return serve
