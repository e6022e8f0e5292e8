"""String-in exports (kerasllm.export.text): raw text in, entities or class scores out.

The reference is the Python pipeline: ``predict_entities`` (what ``kerasllm predict
ner`` prints) for NER, the Keras model's softmax on ``encode_batch`` ids for
sequence classification. The NER model is the tiny one ``kerasllm finetune ner``
trains in tests/test_cli_ner.py (an almost untrained classifier that predicts many
entities, so spans of every shape are exercised).
"""
import os

import numpy as np
import pytest
import tensorflow as tf

from kerasllm.data import read_conll
from kerasllm.export import (
    TextRunner,
    export_text_savedmodel,
    export_text_tflite,
    text_serving_function,
    tflite_ops,
    verify_text,
)
from kerasllm.export.text import CUSTOM_OPS, entity_types
from kerasllm.models import get_preset, sequence_classifier
from kerasllm.training.ner_finetune import load_ner_folder, predict_entities
from tests.test_cli_ner import tiny_ner_model

WNUT_TEST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "wnut17", "test.conll")
TRICKY = [
    "",
    "Barack Obama visited Paris , then Crème brûlée in Zürich…",
    "Cre\u0300me and ß and \u00adsoft hyphen, ctrl\x07 char and 日本語 text 😀!",
    "U.S. Dr. Smith's co-op isn't 3.14 #hashtag @mention http://t.co/x",
]


@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    return load_ner_folder(tiny_ner_model(tmp_path_factory)["model"])


@pytest.fixture(scope="module")
def texts(ner):
    """Up to 50 WNUT-17 test sentences (those that fit the model without windows), plus edge cases."""
    _, tokenizer, _ = ner
    if not os.path.isfile(WNUT_TEST):
        pytest.skip(f"shared data missing: {os.path.abspath(WNUT_TEST)}")
    sentences = [" ".join(s.tokens) for s in read_conll(WNUT_TEST)]
    fitting = [t for t in sentences if len(tokenizer.encode(t)) <= 128][:50]
    assert len(fitting) == 50
    return fitting + TRICKY


def _same_entities(got, want):
    assert len(got) == len(want)
    for i, (have, ref) in enumerate(zip(got, want)):
        assert [(e["start"], e["end"], e["type"], e["text"]) for e in have] == [
            (e["start"], e["end"], e["type"], e["text"]) for e in ref
        ], i
        np.testing.assert_allclose([e["score"] for e in have], [e["score"] for e in ref], atol=1e-5)


def test_tflite_string_in_ner_returns_the_entities_of_predict_entities(ner, texts, tmp_path):
    model, tokenizer, label_map = ner
    report = export_text_tflite(model, tokenizer, tmp_path / "ner_text.tflite", labels=label_map.labels)
    runner = TextRunner(report.path, num_threads=1)
    want = predict_entities(model, tokenizer, label_map, texts, max_length=128)
    got = runner(texts)
    _same_entities(got, want)
    assert sum(len(e) for e in want) > 100  # many entities, of every length
    assert verify_text(runner, model, tokenizer, texts, label_map.labels)["agreement"] == 1.0
    # One text at a time gives the same as the batch (padding does not leak).
    _same_entities(runner(texts[51:52]), [got[51]])
    # The file needs TF Text's two custom ops and TFLite builtins, nothing else.
    ops = tflite_ops(report.path)
    assert sorted(op for op in ops if not op.replace("_", "").isupper()) == sorted(CUSTOM_OPS)
    assert not [op for op in ops if op.startswith("Flex")]
    assert report.signatures["serving_default"]["inputs"] == ["text"]
    assert os.path.isfile(tmp_path / "ner_text.labels.json") and os.path.isfile(tmp_path / "ner_text.vocab.txt")


def test_savedmodel_string_in_ner_and_truncation(ner, texts, tmp_path):
    model, tokenizer, label_map = ner
    report = export_text_savedmodel(model, tokenizer, tmp_path / "ner_text", labels=label_map.labels, max_length=12)
    runner = TextRunner(report.path)
    # max_length=12 truncates long texts to 10 sub-words; predict_entities windows
    # them instead, so compare with predict_entities on the first 10 sub-words' words.
    short = []
    for text in texts[:50] + TRICKY[1:]:
        enc = tokenizer.encode(text)
        if len(enc) <= 12:
            short.append((text, text))
        elif enc.word_ids[11] != enc.word_ids[10]:  # the cut falls between words
            short.append((text, text[: enc.offsets[10][1]]))
    assert len(short) >= 10
    got = runner([full for full, _ in short])
    want = predict_entities(model, tokenizer, label_map, [cut for _, cut in short], max_length=128)
    _same_entities(got, want)


def test_sequence_classifier_string_in_scores(tmp_path, ner):
    _, tokenizer, _ = ner
    tf.keras.utils.set_random_seed(2)
    config = get_preset("bert-tiny", vocab_size=tokenizer.vocab_size, num_layers=1, max_position=64)
    model = sequence_classifier(config, num_labels=3)
    report = export_text_savedmodel(model, tokenizer, tmp_path / "cls", labels=["neg", "neu", "pos"])
    runner = TextRunner(report.path)
    sample = TRICKY[1:] + ["a short one", "the cat sat on the mat " * 20]  # the last is truncated to 64
    got = runner(sample)
    encoded = tokenizer.encode_batch(sample, max_length=64)
    want = tf.nn.softmax(model({k: encoded[k] for k in model.input_names}), axis=-1).numpy()
    for have, ref in zip(got, want):
        np.testing.assert_allclose(list(have["scores"].values()), ref, atol=1e-5)
        assert have["label"] == ["neg", "neu", "pos"][int(np.argmax(ref))]
    result = verify_text(runner, model, tokenizer, sample, ["neg", "neu", "pos"], max_length=64)
    assert result["agreement"] == 1.0 and result["max_score_diff"] < 1e-5


def test_entity_types_follow_conlleval():
    types, prefixes, codes = entity_types(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "S-ORG", "E-ORG"])
    assert types == ["PER", "LOC", "ORG"]
    assert prefixes == [0, 1, 2, 1, 2, 4, 3] and codes == [-1, 0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="invalid tag"):
        entity_types(["O", "PER"])


def test_string_in_export_errors(ner, tmp_path):
    model, tokenizer, label_map = ner
    out = tmp_path / "x.tflite"
    with pytest.raises(ValueError, match="not available for a string-in model"):
        export_text_tflite(model, tokenizer, out, labels=label_map.labels, quantize="int8")
    with pytest.raises(ValueError, match="labels must list the"):
        text_serving_function(model, tokenizer, labels=["O", "B-X"])
    with pytest.raises(ValueError, match="max_position=128"):
        export_text_tflite(model, tokenizer, out, labels=label_map.labels, max_length=4096)
    from kerasllm.models import bert_encoder

    with pytest.raises(ValueError, match="token or sequence classifier"):
        text_serving_function(bert_encoder(get_preset("bert-tiny", vocab_size=tokenizer.vocab_size)), tokenizer)
    assert os.listdir(tmp_path) == []
