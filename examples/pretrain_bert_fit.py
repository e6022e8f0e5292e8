"""Pretrain a small BERT (masked LM + next sentence) with plain ``model.fit`` (what ``kerasllm pretrain mlm`` does).

Run from the repository root, on any text files with blank lines between documents (default: tiny
Shakespeare from the shared data):

    python examples/pretrain_bert_fit.py ["texts/*.txt"]
"""
import sys

from kerasllm import training
from kerasllm.data import TextCorpus, masked_lm_dataset, sentence_chunks, tokenize_documents
from kerasllm.models import bert_pretraining, get_preset
from kerasllm.tokenizers import WordPieceTokenizer, train_wordpiece_vocab

corpus = TextCorpus(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/tinyshakespeare/input.txt")
training.set_seed(0)
tokenizer = WordPieceTokenizer(train_wordpiece_vocab(corpus.documents("train"), 2000), lowercase=True)

# Each document's lines are its sentences; consecutive sentences are grouped into chunks of about
# 128 - 3 tokens, split into [CLS] A [SEP] B [SEP] pairs (half of the B's from another document)
# and masked dynamically (15%: 80% [MASK], 10% random, 10% unchanged).
chunks = {
    split: sentence_chunks(tokenize_documents(corpus.documents(split, with_keys=True), tokenizer, by_line=True), 125).cache()
    for split in ("train", "validation")
}
train = masked_lm_dataset(chunks["train"], tokenizer, seq_length=128, batch_size=32)
held_out = masked_lm_dataset(chunks["validation"], tokenizer, seq_length=128, batch_size=32, training=False).cache()

steps = 600
model = bert_pretraining(get_preset("bert-tiny", vocab_size=tokenizer.vocab_size, max_position=128))
model.compile(
    optimizer=training.create_optimizer(1e-3, num_train_steps=steps, warmup_ratio=0.05),
    loss={
        "mlm_logits": training.masked_sparse_categorical_crossentropy(),
        "nsp_logits": training.masked_sparse_categorical_crossentropy(),
    },
    metrics={"mlm_logits": [training.masked_accuracy()], "nsp_logits": ["accuracy"]},
)
model.fit(train, steps_per_epoch=200, epochs=steps // 200, validation_data=held_out)
