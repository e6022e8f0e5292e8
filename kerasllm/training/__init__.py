"""Training: AdamW and warm-up schedules, masked token losses, callbacks, strategies.

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
"""
from kerasllm.training.callbacks import (
    BestCheckpoint,
    ResumableEarlyStopping,
    ResumableTraining,
    ThroughputProgress,
    standard_callbacks,
)
from kerasllm.training.distribution import strategy
from kerasllm.training.losses import (
    MaskedAccuracy,
    MaskedSparseCategoricalCrossentropy,
    masked_accuracy,
    masked_sparse_categorical_crossentropy,
)
from kerasllm.training.mixed_precision import set_mixed_precision
from kerasllm.training.optimizers import WarmupSchedule, create_optimizer
from kerasllm.training.seed import set_seed
from kerasllm.training.train_step import enable_gradient_accumulation, install_train_step

__all__ = [
    "BestCheckpoint",
    "MaskedAccuracy",
    "MaskedSparseCategoricalCrossentropy",
    "ResumableEarlyStopping",
    "ResumableTraining",
    "ThroughputProgress",
    "WarmupSchedule",
    "create_optimizer",
    "enable_gradient_accumulation",
    "install_train_step",
    "masked_accuracy",
    "masked_sparse_categorical_crossentropy",
    "set_mixed_precision",
    "set_seed",
    "standard_callbacks",
    "strategy",
]
