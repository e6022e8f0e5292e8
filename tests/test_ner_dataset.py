"""NER features: windows of long sentences, label alignment, bucketing, merging predictions back."""
import numpy as np
import pytest

from kerasllm.data import LabelMap, Sentence
from kerasllm.data.ner_dataset import (
    IGNORE_INDEX,
    bucket_batches,
    encode_sentences,
    make_dataset,
    pad_batch,
    padding_waste,
    predict_word_scores,
)
from kerasllm.tokenizers import WordPieceTokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "ada", "love", "##lace", "visited", "paris", "in", "may", "."]


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer(VOCAB, lowercase=True)


def test_labels_on_first_subword_hand_worked(tokenizer):
    sentence = Sentence(["Ada", "Lovelace", "visited", "Paris", "."], ["B-PER", "I-PER", "O", "B-LOC", "O"])
    labels = LabelMap.from_sentences([sentence])
    (window,) = encode_sentences([sentence], tokenizer, labels, max_length=16)
    # [CLS] ada love ##lace visited paris . [SEP]
    assert window.input_ids.tolist() == [2, 5, 6, 7, 8, 9, 12, 3]
    assert window.word_ids == [None, 0, 1, 1, 2, 3, 4, None]
    ids = labels.label_to_id
    want = [IGNORE_INDEX, ids["B-PER"], ids["I-PER"], IGNORE_INDEX, ids["O"], ids["B-LOC"], ids["O"], IGNORE_INDEX]
    assert window.labels.tolist() == want


def test_long_sentence_is_windowed_not_truncated(tokenizer):
    words = (["Ada", "Lovelace", "visited", "Paris", "in", "May", "."] * 90)[:600]
    tags = ["O"] * len(words)
    tags[3::7] = ["B-LOC"] * len(tags[3::7])
    sentence = Sentence(words, tags)
    labels = LabelMap.from_sentences([sentence])
    windows = encode_sentences([sentence], tokenizer, labels, max_length=32)
    assert len(windows) > 1 and all(len(w.input_ids) <= 32 for w in windows)
    covered = set()
    for w in windows:
        covered.update(range(w.start_word, w.end_word))
    assert covered == set(range(600))
    # a model that predicts each word's gold label recovers all 600 tags after merging
    num_labels = labels.num_labels

    def oracle(inputs, training=False):
        import tensorflow as tf

        logits = np.zeros(inputs["input_ids"].shape + (num_labels,), np.float32)
        for row, ids in enumerate(inputs["input_ids"]):
            for pos, token in enumerate(ids):
                logits[row, pos, labels.label_to_id["B-LOC"] if token == 9 else labels.label_to_id["O"]] = 5.0
        return tf.constant(logits)

    (scores,) = predict_word_scores(oracle, windows, 1, [600])
    predicted = [labels.labels[i] for i in scores.argmax(-1)]
    assert predicted == tags


def test_bucketing_reduces_padding_and_is_seeded():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, 1000)

    class W:
        def __init__(self, n):
            self.input_ids = np.zeros(n)

    windows = [W(n) for n in lengths]
    bucketed = bucket_batches(lengths, 32, shuffle=True, seed=3)
    plain = [np.arange(i, min(i + 32, 1000)) for i in range(0, 1000, 32)]
    assert padding_waste(windows, bucketed) < padding_waste(windows, plain) / 3
    again = bucket_batches(lengths, 32, shuffle=True, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(bucketed, again))
    assert sorted(np.concatenate(bucketed).tolist()) == list(range(1000))


def test_make_dataset_pads_per_batch(tokenizer):
    sentences = [Sentence(["Ada"] * n, ["O"] * n) for n in (1, 2, 3, 20)]
    labels = LabelMap.from_sentences(sentences)
    windows = encode_sentences(sentences, tokenizer, labels, max_length=64)
    batches = list(make_dataset(windows, batch_size=2))
    assert [b[0]["input_ids"].shape.as_list() for b in batches] == [[2, 8], [2, 24]]
    inputs, y = pad_batch(windows, [0])
    assert inputs["attention_mask"].sum() == 3 and (y[0, 3:] == IGNORE_INDEX).all()


def test_unknown_tag_names_the_file_and_line(tokenizer, tmp_path):
    train = [Sentence(["Paris"], ["B-LOC"])]
    labels = LabelMap.from_sentences(train)
    with pytest.raises(ValueError, match=r"B-PER.*test\.conll.*line 7"):
        encode_sentences([Sentence(["Ada"], ["B-PER"], line=7)], tokenizer, labels, path="test.conll")


def test_shuffled_epochs_accepts_seed_zero_after_global_seeding(tokenizer, tmp_path):
    # Regression: seed 0 made TF compare a tensor seed with 0 in Python and fail.
    from kerasllm import training

    sentences = [Sentence(["Ada"] * n, ["O"] * n) for n in range(1, 9)]
    windows = encode_sentences(sentences, tokenizer, LabelMap.from_sentences(sentences), max_length=16)
    training.set_seed(0)
    resume = training.ResumableTraining(str(tmp_path / "backup"))
    batches = list(resume.shuffled_epochs(make_dataset(windows, 2, shuffle=True, seed=0), seed=0, batch_fn=lambda d: d))
    assert sum(int(b[0]["input_ids"].shape[0]) for b in batches) == 8


def test_word_longer_than_a_window_keeps_its_first_subwords(tokenizer):
    # "lovelacelacelace" = love ##lace ##lace ##lace: 4 sub-words, 3 slots at max_length 5.
    sentence = Sentence(["Ada", "Lovelacelacelace", "visited"], ["B-PER", "I-PER", "O"])
    labels = LabelMap.from_sentences([sentence])
    windows = encode_sentences([sentence], tokenizer, labels, max_length=5)
    spans = [(w.start_word, w.end_word) for w in windows]
    assert spans[0][0] == 0 and spans[-1][1] == 3 and (1, 2) in spans
    long_word = windows[spans.index((1, 2))]
    # [CLS] love ##lace ##lace [SEP]: cut to the window, the label on the first sub-word only.
    assert long_word.input_ids.tolist() == [2, 6, 7, 7, 3]
    i_per = labels.label_to_id["I-PER"]
    assert long_word.labels.tolist() == [IGNORE_INDEX, i_per, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
