"""Fine-tune a text classifier with plain ``model.fit`` (what ``kerasllm finetune classify`` does).

Run from the repository root (uses kerasllm's embedded topic corpus; pass CSV/TSV/JSONL paths
with ``text`` and ``label`` columns to use yours):

    python examples/finetune_classify_fit.py [train.jsonl dev.jsonl]
"""
import sys

import tf_keras as keras

from kerasllm import training
from kerasllm.data import LabelMap, read_classification, write_classification_corpus
from kerasllm.models import get_preset, sequence_classifier
from kerasllm.tokenizers import WordPieceTokenizer, train_wordpiece_vocab
from kerasllm.training.classify_finetune import classification_dataset, encode_examples, evaluate_encoded

if len(sys.argv) == 3:
    train_path, dev_path = sys.argv[1:]
else:
    paths = write_classification_corpus("saved_models/example-classify-data", seed=0)
    train_path, dev_path = paths["train"], paths["dev"]
train, label_names = read_classification(train_path)
dev, _ = read_classification(dev_path)

training.set_seed(0)
labels = LabelMap(label_names)
vocab = train_wordpiece_vocab(train.texts, vocab_size=1000, lowercase=False)
tokenizer = WordPieceTokenizer(vocab, lowercase=False)
train_inputs = encode_examples(train, tokenizer, labels, max_length=128)  # [CLS] text [SEP] (+ pair [SEP])
dev_inputs = encode_examples(dev, tokenizer, labels, max_length=128)
batches = classification_dataset(train_inputs, batch_size=32, shuffle=True, seed=0)  # length-bucketed

epochs = 6
strategy = training.strategy("auto")  # one CPU/GPU, several GPUs, TPU: build and compile inside its scope
with strategy.scope():
    model = sequence_classifier(get_preset("bert-tiny", vocab_size=len(vocab)), labels.num_labels)
    model.compile(
        optimizer=training.create_optimizer(5e-4, num_train_steps=epochs * len(batches), warmup_ratio=0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
model.fit(batches.shuffle(len(batches)), epochs=epochs)
scores = evaluate_encoded(model, dev_inputs, labels)
print(f"dev accuracy {scores['accuracy'] * 100:.2f}, macro-F1 {scores['macro_f1'] * 100:.2f}")
