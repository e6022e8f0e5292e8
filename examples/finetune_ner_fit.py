"""Fine-tune a NER token classifier with plain ``model.fit`` (what ``kerasllm finetune ner`` does).

Run from the repository root (uses kerasllm's embedded corpus; pass CoNLL paths to use yours):

    python examples/finetune_ner_fit.py [train.conll dev.conll]
"""
import sys

import numpy as np

from kerasllm import training
from kerasllm.data import LabelMap, read_conll, write_ner_corpus
from kerasllm.data.ner_dataset import encode_sentences, make_dataset
from kerasllm.models import get_preset, token_classifier
from kerasllm.tokenizers import WordPieceTokenizer, train_wordpiece_vocab
from kerasllm.training.ner_finetune import EntityF1Callback

if len(sys.argv) == 3:
    train_path, dev_path = sys.argv[1:]
else:
    paths = write_ner_corpus("saved_models/example-data", seed=0)
    train_path, dev_path = paths["train"], paths["dev"]
train, dev = read_conll(train_path), read_conll(dev_path)

training.set_seed(0)
labels = LabelMap.from_sentences(train)
vocab = train_wordpiece_vocab([" ".join(s.tokens) for s in train], vocab_size=1000, lowercase=False)
tokenizer = WordPieceTokenizer(vocab, lowercase=False)

train_windows = encode_sentences(train, tokenizer, labels, max_length=128)
dev_windows = encode_sentences(dev, tokenizer, labels, max_length=128)
batches = make_dataset(train_windows, batch_size=32, shuffle=True, seed=0)

epochs = 5
model = token_classifier(get_preset("bert-tiny", vocab_size=len(vocab)), labels.num_labels)
model.compile(
    optimizer=training.create_optimizer(5e-4, num_train_steps=epochs * len(batches), warmup_ratio=0.1),
    loss=training.masked_sparse_categorical_crossentropy(),
    metrics=[training.masked_accuracy()],
)
model.fit(
    batches.shuffle(len(batches)),
    epochs=epochs,
    callbacks=[EntityF1Callback(dev, dev_windows, labels)],
)
print("trainable parameters:", int(sum(np.prod(v.shape) for v in model.trainable_variables)))
