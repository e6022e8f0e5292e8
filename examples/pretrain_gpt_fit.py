"""Pretrain a small GPT with plain ``model.fit`` (what ``kerasllm pretrain clm`` does, minus resume and reports).

Run from the repository root, on any text files (default: tiny Shakespeare from the shared data):

    python examples/pretrain_gpt_fit.py ["texts/*.txt"]
"""
import sys

from kerasllm import training
from kerasllm.data import TextCorpus, causal_lm_blocks, causal_lm_dataset, tokenize_documents
from kerasllm.models import get_preset, gpt_decoder
from kerasllm.tokenizers import train_bpe_vocab

corpus = TextCorpus(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/tinyshakespeare/input.txt")
training.set_seed(0)
tokenizer = train_bpe_vocab(corpus.documents("train"), vocab_size=2000)

# Tokenize once: every document, an end-of-text id after each, cut into blocks of 128 + 1 ids.
blocks = {
    split: causal_lm_blocks(tokenize_documents(corpus.documents(split), tokenizer), 128, tokenizer.eos_id).cache()
    for split in ("train", "validation")
}
train = causal_lm_dataset(blocks["train"], batch_size=32, shuffle_seed=0, repeat=True)
held_out = causal_lm_dataset(blocks["validation"], batch_size=32)

steps = 300
model = gpt_decoder(get_preset("gpt-tiny", vocab_size=tokenizer.vocab_size, max_position=128))
model.compile(
    optimizer=training.create_optimizer(1e-3, num_train_steps=steps, warmup_ratio=0.05),
    loss=training.masked_sparse_categorical_crossentropy(),
    metrics=[training.Perplexity()],
)
model.fit(train, steps_per_epoch=100, epochs=steps // 100, validation_data=held_out)
