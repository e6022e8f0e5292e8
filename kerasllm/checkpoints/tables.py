"""Name tables between foreign checkpoints and kerasllm weights, one table per format.

Each row is ``Row(source, target, transform)``:

* ``source``: the checkpoint tensor name, or a tuple of names that fuse into one
  kerasllm weight (BERT's separate query/key/value into ``qkv_kernel``);
  ``{i}`` stands for the block index.
* ``target``: the kerasllm weight path as ``model.weights`` prints it (without ``:0``).
* ``transform``: a key of :data:`TRANSFORMS`, an invertible map between the
  checkpoint tensor(s) and the kerasllm array. Every transform is a transpose,
  concatenation or split, so HF -> kerasllm -> HF is bit-exact.

Hugging Face names are listed without the model prefix (``bert.`` or
``transformer.``); the readers strip it and the writer adds it back.
"""
import collections

import numpy as np

Row = collections.namedtuple("Row", ["source", "target", "transform"])


class _Transform:
    """A pair of maps: checkpoint arrays -> kerasllm array, and back."""

    def __init__(self, forward, backward):
        self.forward = forward
        self.backward = backward


def _split(x, parts, axis):
    return [np.ascontiguousarray(p) for p in np.split(x, parts, axis=axis)]


TRANSFORMS = {
    # Same layout on both sides.
    "copy": _Transform(lambda a: a[0], lambda x: [x]),
    # PyTorch Linear stores [out, in]; Keras Dense stores [in, out].
    "transpose": _Transform(lambda a: np.ascontiguousarray(a[0].T), lambda x: [np.ascontiguousarray(x.T)]),
    # Three PyTorch [out, in] kernels -> one Keras [in, 3 * out] kernel, columns Q | K | V.
    "fuse_transposed": _Transform(
        lambda a: np.concatenate([t.T for t in a], axis=1),
        lambda x: [np.ascontiguousarray(p.T) for p in _split(x, 3, axis=1)],
    ),
    # Three [in, out] kernels (TF) -> one [in, 3 * out] kernel.
    "fuse_columns": _Transform(lambda a: np.concatenate(a, axis=1), lambda x: _split(x, 3, axis=1)),
    # Three biases -> one.
    "fuse_bias": _Transform(lambda a: np.concatenate(a, axis=0), lambda x: _split(x, 3, axis=0)),
}


def _qkv(prefix, suffix):
    return tuple(f"{prefix}.{part}.{suffix}" for part in ("query", "key", "value"))


_HF_BLOCK = "encoder.layer.{i}"
_KL_BLOCK = "encoder_layer_{i}"

# Hugging Face BertModel / BertFor{MaskedLM,PreTraining,TokenClassification,SequenceClassification}.
BERT_HF_TABLE = [
    Row("embeddings.word_embeddings.weight", "embeddings/token_embeddings", "copy"),
    Row("embeddings.position_embeddings.weight", "embeddings/position_embeddings", "copy"),
    Row("embeddings.token_type_embeddings.weight", "embeddings/token_type_embeddings", "copy"),
    Row("embeddings.LayerNorm.weight", "embeddings/layer_norm/gamma", "copy"),
    Row("embeddings.LayerNorm.bias", "embeddings/layer_norm/beta", "copy"),
    Row(_qkv(f"{_HF_BLOCK}.attention.self", "weight"), f"{_KL_BLOCK}/attention/qkv_kernel", "fuse_transposed"),
    Row(_qkv(f"{_HF_BLOCK}.attention.self", "bias"), f"{_KL_BLOCK}/attention/qkv_bias", "fuse_bias"),
    Row(f"{_HF_BLOCK}.attention.output.dense.weight", f"{_KL_BLOCK}/attention/output_kernel", "transpose"),
    Row(f"{_HF_BLOCK}.attention.output.dense.bias", f"{_KL_BLOCK}/attention/output_bias", "copy"),
    Row(f"{_HF_BLOCK}.attention.output.LayerNorm.weight", f"{_KL_BLOCK}/attention_norm/gamma", "copy"),
    Row(f"{_HF_BLOCK}.attention.output.LayerNorm.bias", f"{_KL_BLOCK}/attention_norm/beta", "copy"),
    Row(f"{_HF_BLOCK}.intermediate.dense.weight", f"{_KL_BLOCK}/ffn/intermediate/kernel", "transpose"),
    Row(f"{_HF_BLOCK}.intermediate.dense.bias", f"{_KL_BLOCK}/ffn/intermediate/bias", "copy"),
    Row(f"{_HF_BLOCK}.output.dense.weight", f"{_KL_BLOCK}/ffn/output/kernel", "transpose"),
    Row(f"{_HF_BLOCK}.output.dense.bias", f"{_KL_BLOCK}/ffn/output/bias", "copy"),
    Row(f"{_HF_BLOCK}.output.LayerNorm.weight", f"{_KL_BLOCK}/ffn_norm/gamma", "copy"),
    Row(f"{_HF_BLOCK}.output.LayerNorm.bias", f"{_KL_BLOCK}/ffn_norm/beta", "copy"),
    Row("pooler.dense.weight", "pooler/dense/kernel", "transpose"),
    Row("pooler.dense.bias", "pooler/dense/bias", "copy"),
    # Heads (never carry the ``bert.`` prefix).
    Row("cls.predictions.transform.dense.weight", "mlm_transform/kernel", "transpose"),
    Row("cls.predictions.transform.dense.bias", "mlm_transform/bias", "copy"),
    Row("cls.predictions.transform.LayerNorm.weight", "mlm_norm/gamma", "copy"),
    Row("cls.predictions.transform.LayerNorm.bias", "mlm_norm/beta", "copy"),
    Row("cls.predictions.bias", "mlm_bias/bias", "copy"),
    Row("cls.seq_relationship.weight", "nsp/kernel", "transpose"),
    Row("cls.seq_relationship.bias", "nsp/bias", "copy"),
    Row("classifier.weight", "classifier/kernel", "transpose"),
    Row("classifier.bias", "classifier/bias", "copy"),
]
# Checkpoint tensors that are buffers or tied copies of a mapped tensor.
BERT_HF_IGNORED = ("embeddings.position_ids", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
# Names under which the backbone sits in head models (``bert.encoder...``).
BERT_HF_BACKBONE = ("embeddings.", "encoder.", "pooler.")

_GPT_HF_BLOCK = "h.{i}"
_GPT_KL_BLOCK = "decoder_layer_{i}"

# Hugging Face GPT2Model / GPT2LMHeadModel. GPT-2's Conv1D already stores [in, out].
GPT2_HF_TABLE = [
    Row("wte.weight", "embeddings/token_embeddings", "copy"),
    Row("wpe.weight", "embeddings/position_embeddings", "copy"),
    Row(f"{_GPT_HF_BLOCK}.ln_1.weight", f"{_GPT_KL_BLOCK}/attention_norm/gamma", "copy"),
    Row(f"{_GPT_HF_BLOCK}.ln_1.bias", f"{_GPT_KL_BLOCK}/attention_norm/beta", "copy"),
    Row(f"{_GPT_HF_BLOCK}.attn.c_attn.weight", f"{_GPT_KL_BLOCK}/attention/qkv_kernel", "copy"),
    Row(f"{_GPT_HF_BLOCK}.attn.c_attn.bias", f"{_GPT_KL_BLOCK}/attention/qkv_bias", "copy"),
    Row(f"{_GPT_HF_BLOCK}.attn.c_proj.weight", f"{_GPT_KL_BLOCK}/attention/output_kernel", "copy"),
    Row(f"{_GPT_HF_BLOCK}.attn.c_proj.bias", f"{_GPT_KL_BLOCK}/attention/output_bias", "copy"),
    Row(f"{_GPT_HF_BLOCK}.ln_2.weight", f"{_GPT_KL_BLOCK}/ffn_norm/gamma", "copy"),
    Row(f"{_GPT_HF_BLOCK}.ln_2.bias", f"{_GPT_KL_BLOCK}/ffn_norm/beta", "copy"),
    Row(f"{_GPT_HF_BLOCK}.mlp.c_fc.weight", f"{_GPT_KL_BLOCK}/ffn/intermediate/kernel", "copy"),
    Row(f"{_GPT_HF_BLOCK}.mlp.c_fc.bias", f"{_GPT_KL_BLOCK}/ffn/intermediate/bias", "copy"),
    Row(f"{_GPT_HF_BLOCK}.mlp.c_proj.weight", f"{_GPT_KL_BLOCK}/ffn/output/kernel", "copy"),
    Row(f"{_GPT_HF_BLOCK}.mlp.c_proj.bias", f"{_GPT_KL_BLOCK}/ffn/output/bias", "copy"),
    Row("ln_f.weight", "final_norm/gamma", "copy"),
    Row("ln_f.bias", "final_norm/beta", "copy"),
]
# ``lm_head.weight`` is tied to ``wte``; ``attn.bias``/``attn.masked_bias`` are causal-mask buffers.
GPT2_HF_IGNORED = ("lm_head.weight", "attn.bias", "attn.masked_bias")

_G_BLOCK = "bert/encoder/layer_{i}"

# Google's original BERT TensorFlow checkpoints (run_pretraining.py, run_classifier.py).
# Kernels are already [in, out]; only the classifier/NSP ``output_weights`` are [out, in].
BERT_GOOGLE_TABLE = [
    Row("bert/embeddings/word_embeddings", "embeddings/token_embeddings", "copy"),
    Row("bert/embeddings/position_embeddings", "embeddings/position_embeddings", "copy"),
    Row("bert/embeddings/token_type_embeddings", "embeddings/token_type_embeddings", "copy"),
    Row("bert/embeddings/LayerNorm/gamma", "embeddings/layer_norm/gamma", "copy"),
    Row("bert/embeddings/LayerNorm/beta", "embeddings/layer_norm/beta", "copy"),
    Row(
        tuple(f"{_G_BLOCK}/attention/self/{p}/kernel" for p in ("query", "key", "value")),
        f"{_KL_BLOCK}/attention/qkv_kernel",
        "fuse_columns",
    ),
    Row(
        tuple(f"{_G_BLOCK}/attention/self/{p}/bias" for p in ("query", "key", "value")),
        f"{_KL_BLOCK}/attention/qkv_bias",
        "fuse_bias",
    ),
    Row(f"{_G_BLOCK}/attention/output/dense/kernel", f"{_KL_BLOCK}/attention/output_kernel", "copy"),
    Row(f"{_G_BLOCK}/attention/output/dense/bias", f"{_KL_BLOCK}/attention/output_bias", "copy"),
    Row(f"{_G_BLOCK}/attention/output/LayerNorm/gamma", f"{_KL_BLOCK}/attention_norm/gamma", "copy"),
    Row(f"{_G_BLOCK}/attention/output/LayerNorm/beta", f"{_KL_BLOCK}/attention_norm/beta", "copy"),
    Row(f"{_G_BLOCK}/intermediate/dense/kernel", f"{_KL_BLOCK}/ffn/intermediate/kernel", "copy"),
    Row(f"{_G_BLOCK}/intermediate/dense/bias", f"{_KL_BLOCK}/ffn/intermediate/bias", "copy"),
    Row(f"{_G_BLOCK}/output/dense/kernel", f"{_KL_BLOCK}/ffn/output/kernel", "copy"),
    Row(f"{_G_BLOCK}/output/dense/bias", f"{_KL_BLOCK}/ffn/output/bias", "copy"),
    Row(f"{_G_BLOCK}/output/LayerNorm/gamma", f"{_KL_BLOCK}/ffn_norm/gamma", "copy"),
    Row(f"{_G_BLOCK}/output/LayerNorm/beta", f"{_KL_BLOCK}/ffn_norm/beta", "copy"),
    Row("bert/pooler/dense/kernel", "pooler/dense/kernel", "copy"),
    Row("bert/pooler/dense/bias", "pooler/dense/bias", "copy"),
    Row("cls/predictions/transform/dense/kernel", "mlm_transform/kernel", "copy"),
    Row("cls/predictions/transform/dense/bias", "mlm_transform/bias", "copy"),
    Row("cls/predictions/transform/LayerNorm/gamma", "mlm_norm/gamma", "copy"),
    Row("cls/predictions/transform/LayerNorm/beta", "mlm_norm/beta", "copy"),
    Row("cls/predictions/output_bias", "mlm_bias/bias", "copy"),
    Row("cls/seq_relationship/output_weights", "nsp/kernel", "transpose"),
    Row("cls/seq_relationship/output_bias", "nsp/bias", "copy"),
    Row("output_weights", "classifier/kernel", "transpose"),
    Row("output_bias", "classifier/bias", "copy"),
]

# kerasllm layers that belong to a task head: initialised fresh when the checkpoint lacks them.
HEAD_LAYERS = ("pooler", "mlm_transform", "mlm_norm", "mlm_bias", "nsp", "classifier")


def expand(table, num_layers):
    """Rows with ``{i}`` replaced by every block index (other rows once)."""
    rows = []
    for row in table:
        names = row.source if isinstance(row.source, tuple) else (row.source,)
        if "{i}" in row.target:
            for i in range(num_layers):
                rows.append(Row(tuple(n.format(i=i) for n in names), row.target.format(i=i), row.transform))
        else:
            rows.append(Row(names, row.target, row.transform))
    return rows
