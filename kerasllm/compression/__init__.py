"""Compression: TF-MOT pruning and QAT on kerasllm's own layers, post-training quantization,
knowledge distillation and low-rank factorisation, with an accuracy / size / latency report.

Each method acts on the functional ``tf_keras`` models of :mod:`kerasllm.models`::

    from kerasllm import compression

    pruned = compression.prune_model(model, sparsity=0.5, schedule="polynomial", end_step=steps)
    pruned.compile(...); pruned.fit(data, callbacks=compression.pruning_callbacks())
    sparse = compression.strip_pruning(pruned)

    qat = compression.quantize_model(sparse, preserve_sparsity=True)
    qat.compile(...); qat.fit(data)
    kerasllm.export.export_tflite(qat, "model.tflite", quantize="int8", representative_data=rows)

    distiller = compression.Distiller(teacher, compression.student_from_teacher(teacher, every=3))
    replacer = compression.ModuleReplacer(teacher, distiller.student, ramp_steps=steps)  # BERT-of-Theseus
    small, report = compression.factorize_model(model, param_fraction=0.5)

Post-training quantization is :func:`kerasllm.export.export_tflite` (``quantize=
"float16" | "dynamic" | "int8"``), the same code path as ``kerasllm export``.
``kerasllm compress ...`` runs each method on a fine-tuned NER folder and writes
a report row (:mod:`kerasllm.compression.report`).
"""
from kerasllm.compression.distillation import (
    Distiller,
    ModuleReplacer,
    check_label_sets,
    hard_loss,
    hidden_loss,
    hidden_pairs,
    replacement_groups,
    soft_loss,
    student_from_preset,
    student_from_teacher,
)
from kerasllm.compression.lowrank import LowRankDense, choose_rank, factorize_dense, factorize_model, svd_factors
from kerasllm.compression.pruning import (
    SCHEDULES,
    check_sparsity,
    format_sparsity_report,
    gzip_size,
    make_schedule,
    parameter_counts,
    prune_iteratively,
    prune_model,
    pruning_callbacks,
    sparsity_report,
    strip_pruning,
)
from kerasllm.compression.qat import (
    AttentionQuantizeConfig,
    DenseQuantizeConfig,
    EmbeddingQuantizeConfig,
    FeedForwardQuantizeConfig,
    LowRankDenseQuantizeConfig,
    PoolerQuantizeConfig,
    TransformerBlockQuantizeConfig,
    fake_quant_count,
    float_copy,
    quantize_model,
    quantize_scope,
    tflite_weight_sparsity,
    unquantized_projections,
)
from kerasllm.compression.saving import load_model, rebuild

__all__ = [
    "AttentionQuantizeConfig",
    "DenseQuantizeConfig",
    "Distiller",
    "ModuleReplacer",
    "EmbeddingQuantizeConfig",
    "FeedForwardQuantizeConfig",
    "LowRankDense",
    "LowRankDenseQuantizeConfig",
    "PoolerQuantizeConfig",
    "SCHEDULES",
    "TransformerBlockQuantizeConfig",
    "check_label_sets",
    "check_sparsity",
    "choose_rank",
    "factorize_dense",
    "factorize_model",
    "fake_quant_count",
    "float_copy",
    "format_sparsity_report",
    "gzip_size",
    "hard_loss",
    "hidden_loss",
    "load_model",
    "make_schedule",
    "parameter_counts",
    "prune_iteratively",
    "prune_model",
    "pruning_callbacks",
    "quantize_model",
    "quantize_scope",
    "rebuild",
    "soft_loss",
    "sparsity_report",
    "strip_pruning",
    "replacement_groups",
    "hidden_pairs",
    "student_from_preset",
    "student_from_teacher",
    "svd_factors",
    "tflite_weight_sparsity",
    "unquantized_projections",
]
