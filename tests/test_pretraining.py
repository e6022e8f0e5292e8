"""Pretraining inputs: masking statistics, next-sentence pairs, causal-LM blocks, perplexity metrics.

The references are known answers: the masking rule ``ceil(0.15 n)`` per sequence
and the 80/10/10 shares, sentences that carry their document and line numbers,
token streams written out by hand, and NumPy cross-entropies.
"""
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from kerasllm.data.corpus import TextCorpus
from kerasllm.data.pretraining import (
    IGNORE_INDEX,
    causal_lm_blocks,
    causal_lm_example,
    mask_tokens,
    masked_lm_dataset,
    next_sentence_pairs,
    packed_segments,
    sentence_chunks,
    tokenize_documents,
)
from kerasllm.tokenizers import WordPieceTokenizer
from kerasllm.training.pretrain import Perplexity, load_pretraining_tokenizer, unigram_perplexity

PAD, UNK, CLS, SEP, MASK = range(5)
SPECIAL = [PAD, CLS, SEP, MASK]
VOCAB = 30_000


class WordTokenizer:
    """Whitespace words -> ids from a fixed table (unknown words -> 1)."""

    def __init__(self, words):
        self.words = list(words)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.words, tf.range(len(self.words), dtype=tf.int64)), 1
        )

    def tf_tokenize(self, texts):
        return tf.cast(self.table.lookup(tf.strings.split(texts)), tf.int32)


def _ceil_rate(rate, n):
    return math.ceil(np.float32(rate) * np.float32(n))


def _random_batches(rng, count, batch=32):
    """Ragged batches ``[CLS] a [SEP] b [SEP]`` of ordinary ids (5..VOCAB-1), 10..60 ids per segment."""
    for _ in range(count):
        rows = []
        for _ in range(batch):
            a = rng.integers(5, VOCAB, rng.integers(10, 60)).tolist()
            b = rng.integers(5, VOCAB, rng.integers(10, 60)).tolist()
            rows.append([CLS] + a + [SEP] + b + [SEP])
        yield tf.ragged.constant(rows, dtype=tf.int32)


def test_masking_statistics_known_answer():
    tf.random.set_seed(0)
    rng = np.random.default_rng(0)
    masker = tf.function(lambda ids: mask_tokens(ids, VOCAB, MASK, SPECIAL), reduce_retracing=True)
    selected_total = selectable_total = 0
    as_mask = as_random = unchanged = 0
    for ids in _random_batches(rng, 60):
        masked, labels = masker(ids)
        for row, new, lab in zip(ids.to_list(), masked.to_list(), labels.to_list()):
            row, new, lab = np.array(row), np.array(new), np.array(lab)
            special = np.isin(row, SPECIAL)
            chosen = lab != IGNORE_INDEX
            # exactly ceil(15% of the selectable tokens) per sequence (in float32, as the library computes it)
            assert chosen.sum() == _ceil_rate(0.15, (~special).sum())
            assert not chosen[special].any() and (new[special] == row[special]).all()
            # labels only at the chosen positions, holding the original ids; the rest is unchanged
            assert (lab[chosen] == row[chosen]).all() and (new[~chosen] == row[~chosen]).all()
            selected_total += chosen.sum()
            selectable_total += (~special).sum()
            as_mask += (new[chosen] == MASK).sum()
            unchanged += (new[chosen] == row[chosen]).sum()
            as_random += ((new[chosen] != MASK) & (new[chosen] != row[chosen])).sum()
    assert abs(selected_total / selectable_total - 0.15) < 0.01
    assert abs(as_mask / selected_total - 0.8) < 0.01
    assert abs(as_random / selected_total - 0.1) < 0.01
    assert abs(unchanged / selected_total - 0.1) < 0.01  # 0.1 + 0.1 / VOCAB (a random draw of the same id)


def test_whole_word_masking_takes_words_whole():
    tf.random.set_seed(1)
    rng = np.random.default_rng(1)
    continuation = tf.constant(np.arange(VOCAB) >= 20_000)  # ids >= 20000 continue a word, like "##" pieces
    masker = tf.function(
        lambda ids: mask_tokens(ids, VOCAB, MASK, SPECIAL, continuation=continuation), reduce_retracing=True
    )
    for ids in _random_batches(rng, 5):
        _, labels = masker(ids)
        for row, lab in zip(ids.to_list(), labels.to_list()):
            row, chosen = np.array(row), np.array(lab) != IGNORE_INDEX
            starts = ~((row >= 20_000) & (np.arange(len(row)) > 0))
            word_of = np.cumsum(starts) - 1
            words = [chosen[word_of == w] for w in range(word_of[-1] + 1)]
            assert all(w.all() or not w.any() for w in words)  # all pieces of a word, or none
            selectable = [w for w in range(len(words)) if not np.isin(row[word_of == w], SPECIAL).any()]
            assert sum(words[w].all() for w in selectable) == _ceil_rate(0.15, len(selectable))


def _numbered_corpus(folder, docs=40, lines=9):
    """Document d, line s reads "dD sS" (two word ids); documents are separated by blank lines."""
    text = "\n\n".join("\n".join(f"d{d} s{s}" for s in range(lines)) for d in range(docs))
    path = os.path.join(folder, "numbered.txt")
    with open(path, "w") as f:
        f.write(text + "\n")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"d{d}" for d in range(docs)] + [f"s{s}" for s in range(lines)]
    return path, words


def _sentences(ids, words):
    """[(doc, line), ...] of a run of "dD sS" ids."""
    tokens = [words[i] for i in ids]
    assert len(tokens) % 2 == 0
    return [(int(tokens[i][1:]), int(tokens[i + 1][1:])) for i in range(0, len(tokens), 2)]


def test_next_sentence_pairs_are_consecutive_or_from_another_document(tmp_path):
    path, words = _numbered_corpus(tmp_path)
    tokenizer = WordTokenizer(words)
    documents = TextCorpus(path, validation_every=0).documents(with_keys=True)
    chunks = sentence_chunks(tokenize_documents(documents, tokenizer, by_line=True), max_tokens=7).cache()
    for chunk in chunks.as_numpy_iterator():  # chunks are runs of consecutive lines of one document
        sentences = _sentences(chunk["tokens"], words)
        assert {d for d, _ in sentences} == {chunk["doc"]} and list(chunk["sentence_lengths"]) == [2] * len(sentences)
        assert [s for _, s in sentences] == list(range(sentences[0][1], sentences[0][1] + len(sentences)))
    partners = chunks.shuffle(1000, seed=1).repeat()
    pairs = list(next_sentence_pairs(chunks.repeat(10), partners, seed=2).as_numpy_iterator())
    labels = np.array([p["next_sentence_label"] for p in pairs])
    for pair in pairs:
        a, b = _sentences(pair["a"], words), _sentences(pair["b"], words)
        if pair["next_sentence_label"] == 0:  # B continues A: same document, the next line
            assert b[0] == (a[-1][0], a[-1][1] + 1)
        else:
            assert b[0][0] != a[0][0]
    # chunks of 4, 3 and 2 sentences per 9-line document (a sentence joins the chunk its start falls in):
    # half of the pairs draw a random partner, which is kept when it comes from one of the 39 other documents
    assert sorted({len(c["sentence_lengths"]) for c in chunks.as_numpy_iterator()}) == [2, 3, 4]
    expected = 0.5 * (1 - 1 / 40)
    assert abs(labels.mean() - expected) < 0.04, labels.mean()


def test_masked_lm_batches_never_mask_padding_or_specials(tmp_path):
    path, words = _numbered_corpus(tmp_path, docs=12, lines=5)
    tokenizer = WordPieceTokenizer(words, lowercase=False)
    documents = TextCorpus(path, validation_every=0).documents(with_keys=True)
    for next_sentence in (True, False):
        tokenized = tokenize_documents(documents, tokenizer, by_line=next_sentence)
        if next_sentence:
            chunks = sentence_chunks(tokenized, 16 - 3)
        else:
            chunks = packed_segments(tokenized, 16 - 2, SEP)
        batches = masked_lm_dataset(chunks.cache(), tokenizer, 16, 8, next_sentence=next_sentence, training=True)
        for inputs, labels in batches.take(10).as_numpy_iterator():
            ids, mask, mlm = inputs["input_ids"], inputs["attention_mask"], labels["mlm_logits"]
            assert ids.shape == (8, 16) and mlm.shape == (8, 16)
            assert (mlm[mask == 0] == IGNORE_INDEX).all() and (ids[mask == 0] == PAD).all()
            assert (ids[:, 0] == CLS).all() and (mlm[:, 0] == IGNORE_INDEX).all()
            chosen = mlm != IGNORE_INDEX
            assert (mlm[chosen] >= 5).all()  # labels are original ids, never a special token's
            if next_sentence:
                assert set(labels["nsp_logits"].tolist()) <= {0, 1}
                assert ((inputs["token_type_ids"] == 1).sum(1) > 0).all()
            else:
                assert mask.all()  # packed across documents: no padding at all


def test_causal_lm_blocks_known_answer():
    words = ["<eot>", "<unk>"] + list("abcdefgh")
    tokenizer = WordTokenizer(words)
    documents = tf.data.Dataset.from_tensor_slices(["a b c", "d", "e f g h", "a b"])
    tokenized = tokenize_documents(documents, tokenizer)
    blocks = [b.tolist() for b in causal_lm_blocks(tokenized, block_size=3, separator_id=0).as_numpy_iterator()]
    # stream: a b c <eot> d <eot> e f g h <eot> a b <eot>  (14 ids) -> 3 blocks of 4; the last 2 ids are dropped
    stream = [2, 3, 4, 0, 5, 0, 6, 7, 8, 9, 0, 2, 3, 0]
    assert blocks == [[2, 3, 4, 0], [5, 0, 6, 7], [8, 9, 0, 2]]
    assert sum(blocks, []) == stream[: len(blocks) * 4]
    inputs, targets = causal_lm_example(tf.constant(blocks))
    np.testing.assert_array_equal(inputs["input_ids"].numpy(), np.array(blocks)[:, :-1])
    np.testing.assert_array_equal(targets.numpy(), np.array(blocks)[:, 1:])
    assert inputs["attention_mask"].numpy().all()


def test_tokenize_by_line_keeps_sentence_lengths():
    tokenizer = WordTokenizer(["<eot>", "<unk>"] + list("abcdefgh"))
    documents = tf.data.Dataset.from_tensor_slices(["a b\nc", "d\n\n e f g ", "h"])
    docs = list(tokenize_documents(documents, tokenizer, by_line=True, batch_size=2).as_numpy_iterator())
    assert [d["doc"] for d in docs] == [0, 1, 2]
    assert [d["ids"].tolist() for d in docs] == [[2, 3, 4], [5, 6, 7, 8], [9]]
    assert [d["sentence_lengths"].tolist() for d in docs] == [[2, 1], [1, 3], [1]]  # the empty line is dropped


def test_perplexity_and_unigram_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype("float32")
    labels = rng.integers(0, 7, (3, 5))
    labels[0, :2] = IGNORE_INDEX
    metric = Perplexity()
    metric.update_state(labels[:2], logits[:2])
    metric.update_state(labels[2:], logits[2:])
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    kept = labels != IGNORE_INDEX
    ce = -np.take_along_axis(log_p, np.where(kept, labels, 0)[..., None], -1)[..., 0]
    assert float(metric.result()) == pytest.approx(np.exp(ce[kept].mean()), rel=1e-5)

    train = np.array([5, 0, 2, 1])
    held_out = np.array([1, 1, 0, 3])
    p = (train + 1) / (train.sum() + 4)
    assert unigram_perplexity(train, held_out) == pytest.approx(np.exp(-(held_out * np.log(p)).sum() / 5))


def test_tokenizer_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--vocab .*nope: no such folder"):
        load_pretraining_tokenizer(tmp_path / "nope", "mlm")
    with pytest.raises(FileNotFoundError, match="vocab.txt missing; mlm pretraining needs a WordPiece"):
        load_pretraining_tokenizer(tmp_path, "mlm")
    with pytest.raises(FileNotFoundError, match="vocab.json and merges.txt missing"):
        load_pretraining_tokenizer(tmp_path, "clm")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    with pytest.raises(ValueError, match="--vocab .*\\[MASK\\]"):
        load_pretraining_tokenizer(tmp_path, "mlm")
