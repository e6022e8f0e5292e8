"""Training: AdamW and warm-up schedules, masked token losses, callbacks, strategies, fine-tuning.

Everything works with plain ``model.fit`` and under any ``tf.distribute``
strategy (create the model and the optimizer inside ``strategy.scope()``)::

    from kerasllm import training

    dist = training.strategy("auto")
    with dist.scope():
        model = token_classifier(config, num_labels)
        model.compile(
            optimizer=training.create_optimizer(3e-5, num_train_steps, warmup_ratio=0.1),
            loss=training.masked_sparse_categorical_crossentropy(),
            metrics=[training.masked_accuracy()],
        )
    training.install_train_step(model, gradient_accumulation_steps=2)
    callbacks = training.standard_callbacks("saved_models/ner", monitor="val_masked_accuracy", patience=3)
    resume = next(cb for cb in callbacks if isinstance(cb, training.ResumableTraining))
    model.fit(resume.shuffled_epochs(train_examples, seed=0, batch_size=32), epochs=3,
              validation_data=dev_batches, callbacks=callbacks)

The whole fine-tuning jobs of ``kerasllm finetune ner|classify`` are
``run_ner_finetune(NerFinetuneConfig(...))`` and
``run_classify_finetune(ClassifyFinetuneConfig(...))``; both run
:func:`run_finetune` (``kerasllm.training.finetune``) with their task.
"""
import importlib

# Names are imported from their modules on first use, so that importing a light
# module of this package (the fine-tuning configs the CLI reads) does not load
# TensorFlow.
_WHERE = {
    "BestCheckpoint": "callbacks",
    "ResumableEarlyStopping": "callbacks",
    "ResumableTraining": "callbacks",
    "ThroughputProgress": "callbacks",
    "standard_callbacks": "callbacks",
    "strategy": "distribution",
    "accelerator_settings": "distribution",
    "cluster_config": "distribution",
    "configure_cluster": "distribution",
    "local_worker_hosts": "distribution",
    "static_batches": "static_shapes",
    "MaskedAccuracy": "losses",
    "MaskedSparseCategoricalCrossentropy": "losses",
    "masked_accuracy": "losses",
    "masked_sparse_categorical_crossentropy": "losses",
    "set_mixed_precision": "mixed_precision",
    "fused_elementwise": "fusion",
    "WarmupSchedule": "optimizers",
    "create_optimizer": "optimizers",
    "set_seed": "seed",
    "enable_gradient_accumulation": "train_step",
    "install_train_step": "train_step",
    "FinetuneConfig": "finetune_config",
    "NerFinetuneConfig": "finetune_config",
    "ClassifyFinetuneConfig": "finetune_config",
    "FinetuneTask": "finetune",
    "run_finetune": "finetune",
    "run_ner_finetune": "ner_finetune",
    "run_classify_finetune": "classify_finetune",
    "PretrainConfig": "pretrain_config",
    "MlmPretrainConfig": "pretrain_config",
    "ClmPretrainConfig": "pretrain_config",
    "Perplexity": "pretrain",
    "run_pretrain": "pretrain",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"kerasllm.training.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
