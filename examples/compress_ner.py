"""Prune a fine-tuned NER model to 50% with TF-MOT, keep the zeros through QAT, export int8 TFLite.

    kerasllm finetune ner --out saved_models/ner           # a model to compress
    python examples/compress_ner.py saved_models/ner/model saved_models/ner/data/train.conll

The same steps as `kerasllm compress prune` followed by `kerasllm compress qat
--preserve-sparsity`, written out with plain `model.fit`.
"""
import sys

from kerasllm import compression, training
from kerasllm.compression.pipeline import CompressOptions, NerData, load_ner_folder
from kerasllm.export import export_tflite

model_dir, train_file = sys.argv[1], sys.argv[2]
model, tokenizer, labels = load_ner_folder(model_dir)
data = NerData(tokenizer, labels, CompressOptions(model=model_dir, out="", train=train_file, max_length=64))
steps = 2 * data.steps_per_epoch()


def fit(m, epochs=2, lr=5e-5, callbacks=()):
    m.compile(
        optimizer=training.create_optimizer(lr, num_train_steps=steps, warmup_steps=steps // 10),
        loss=training.masked_sparse_categorical_crossentropy(),
    )
    m.fit(data.dataset(), epochs=epochs, callbacks=list(callbacks), verbose=2)


# 1. magnitude pruning of every attention and feed-forward kernel (cubic ramp to 50%)
pruned = compression.prune_model(model, sparsity=0.5, schedule="polynomial", end_step=int(0.75 * steps), frequency=10)
fit(pruned, callbacks=compression.pruning_callbacks())
sparse = compression.strip_pruning(pruned)
print(compression.format_sparsity_report(compression.sparsity_report(sparse, include_embeddings=False)))

# 2. quantization-aware training that keeps the zeros, then an int8 TFLite file (layer norms in float;
#    float_layer_norm=False makes it full-integer)
qat = compression.quantize_model(sparse, preserve_sparsity=True)
fit(qat, epochs=1, lr=2e-5)
report = export_tflite(qat, "pruned_int8.tflite", quantize="int8", representative_data=data.representative())
print(f"{report.path}: {report.size_bytes / 1e6:.2f} MB, gzip {compression.gzip_size(report.path) / 1e6:.2f} MB")
