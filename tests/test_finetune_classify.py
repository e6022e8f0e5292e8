"""Text-classification fine-tuning: the embedded corpus, pair encoding, metrics, a small end-to-end run."""
import json
import os

import numpy as np
import pytest

from kerasllm.data import LabelMap, generate_classification_corpus, read_classification
from kerasllm.data import synthetic_classification as synth
from kerasllm.evaluation import classification_scores, format_classification_report


# ------------------------------------------------------------------ embedded corpus


def test_corpus_is_deterministic_balanced_and_holds_out_names():
    a = generate_classification_corpus(seed=5, num_train=80, num_dev=40, num_test=40)
    b = generate_classification_corpus(seed=5, num_train=80, num_dev=40, num_test=40)
    c = generate_classification_corpus(seed=6, num_train=80, num_dev=40, num_test=40)
    assert a["train"].texts == b["train"].texts and a["test"].labels == b["test"].labels
    assert a["train"].texts != c["train"].texts
    for split in a.values():
        counts = {label: split.labels.count(label) for label in synth.LABELS}
        assert set(counts.values()) == {len(split) // 4}, counts
    held = [
        entry for words in synth.TOPICS.values() for slot in ("subject", "object")
        for i, entry in enumerate(words[slot]) if i % synth.HOLDOUT_EVERY == synth.HOLDOUT_EVERY - 1
    ]
    big = generate_classification_corpus(seed=0, num_train=1200, num_dev=200, num_test=0)
    train_text = " ".join(t.lower() for t in big["train"].texts)
    # a held-out entry never occurs in train (checked as a whole phrase between word boundaries)
    assert not [h for h in held if f" {h} " in f" {train_text.replace(',', ' ').replace('.', ' ')} "]
    dev_with_held = sum(any(h in t.lower() for h in held) for t in big["dev"].texts)
    assert 0.3 < dev_with_held / 200 < 0.8  # about half of the dev clauses (plus second clauses)


def test_written_corpus_reads_back(tmp_path):
    paths = synth.write_classification_corpus(tmp_path / "data", seed=1, num_train=8, num_dev=4, num_test=4)
    examples, labels = read_classification(paths["train"])
    assert examples.texts == generate_classification_corpus(seed=1, num_train=8, num_dev=4, num_test=4)["train"].texts
    assert labels == list(synth.LABELS)


# ------------------------------------------------------------------ encoding

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "dog", "##s"]


def test_pair_encoding_matches_a_hand_worked_example():
    from kerasllm.tokenizers import WordPieceTokenizer
    from kerasllm.training.classify_finetune import encode_texts

    tok = WordPieceTokenizer(VOCAB)
    encoded = encode_texts(tok, ["The cat sat", "dogs"], ["dogs on the mat", "cat"], max_length=32, labels=[1, 0])
    # [CLS] the cat sat [SEP] dog ##s on the mat [SEP]
    assert encoded.input_ids[0].tolist() == [2, 5, 6, 7, 3, 10, 11, 8, 5, 9, 3]
    assert encoded.token_type_ids[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    # [CLS] dog ##s [SEP] cat [SEP]
    assert encoded.input_ids[1].tolist() == [2, 10, 11, 3, 6, 3]
    assert encoded.token_type_ids[1].tolist() == [0, 0, 0, 0, 1, 1]
    inputs, labels = encoded.batch([1, 0], multiple=8)
    assert inputs["input_ids"].shape == (2, 16) and labels.tolist() == [0, 1]
    assert inputs["attention_mask"].sum(axis=1).tolist() == [6, 11]
    assert inputs["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1] + [0] * 10
    # 11 tokens into 9: the longer (second) text loses its last two pieces
    short = encode_texts(tok, ["The cat sat"], ["dogs on the mat"], max_length=9)
    assert short.input_ids[0].tolist() == [2, 5, 6, 7, 3, 10, 11, 8, 3]
    assert short.token_type_ids[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert short.labels.tolist() == [-1]


def test_unknown_label_names_file_and_line(tmp_path):
    from kerasllm.training.classify_finetune import label_ids

    path = tmp_path / "dev.csv"
    path.write_text("text,label\ngood,pos\n\nodd,maybe\n")
    examples, _ = read_classification(str(path))
    with pytest.raises(ValueError, match=r"dev\.csv, line 4: unknown label 'maybe'.*neg, pos"):
        label_ids(examples, LabelMap(["neg", "pos"]))


# ------------------------------------------------------------------ metrics


def test_scores_against_hand_computed_values():
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "c", "c"]
    s = classification_scores(gold, pred, labels=["a", "b", "c", "d"])
    # a: 2 of 2 predicted right, 2 of 3 found; b: 1/2, 1/2; c: 1/2, 1/1; d never occurs
    assert s["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3,
                                                 "predicted": 2, "correct": 2})
    assert s["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert s["per_class"]["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1,
                                                 "predicted": 2, "correct": 1})
    assert s["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 0, "correct": 0}
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)  # d (absent everywhere) is left out
    assert s["macro_precision"] == pytest.approx((1.0 + 0.5 + 0.5) / 3)
    assert s["weighted_f1"] == pytest.approx((0.8 * 3 + 0.5 * 2 + 2 / 3 * 1) / 6)
    assert s["confusion"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    report = format_classification_report(s)
    assert "accuracy 0.6667 (4 of 6 examples)" in report and "macro avg" in report


def test_scores_edge_cases():
    never_predicted = classification_scores(["x", "y"], ["x", "x"])
    assert never_predicted["per_class"]["y"]["precision"] == 0.0  # 0/0 counts as 0
    assert never_predicted["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)
    with pytest.raises(ValueError, match="2 gold labels but 1 predicted"):
        classification_scores(["x", "y"], ["x"])
    with pytest.raises(ValueError, match=r"predicted label\(s\) \['z'\]"):
        classification_scores(["x"], ["z"], labels=["x", "y"])


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from kerasllm.training.classify_finetune import ClassifyFinetuneConfig, run_classify_finetune

    folder = tmp_path_factory.mktemp("classify")
    paths = synth.write_classification_corpus(folder / "data", seed=0, num_train=400, num_dev=40, num_test=80)
    cfg = ClassifyFinetuneConfig(
        train=paths["train"], dev=paths["dev"], test=paths["test"], out=str(folder / "run"),
        epochs=3, batch_size=16, lr=2e-3, max_length=32, vocab_size=300,
    )
    lines = []
    metrics = run_classify_finetune(cfg, log=lines.append)
    return cfg, metrics, lines


def test_learns_a_small_corpus_well_above_chance(run):
    cfg, metrics, lines = run
    assert metrics["test"]["accuracy"] >= 0.5  # 4 balanced classes: chance is 0.25
    assert metrics["epochs_run"] == 3 and metrics["replicas"] == 1
    assert set(metrics["test"]["per_class"]) == set(synth.LABELS)
    assert any(line.startswith("epoch 3: dev accuracy") for line in lines)
    assert lines[-2] == f"test accuracy {metrics['test']['accuracy'] * 100:.2f}, macro-F1 {metrics['test']['macro_f1'] * 100:.2f}"


def test_output_folder_holds_model_labels_tokenizer_config_metrics_logs(run):
    from kerasllm.training.classify_finetune import load_classify_folder

    cfg, metrics, _ = run
    out = cfg.out
    for name in ("config.json", "kerasllm.json", "model.weights.h5", "vocab.txt", "tokenizer_config.json", "labels.json"):
        assert os.path.isfile(os.path.join(out, "model", name)), name
    assert os.listdir(os.path.join(out, "logs"))
    assert not os.path.exists(os.path.join(out, "backup"))
    with open(os.path.join(out, "finetune_config.json")) as f:
        assert json.load(f) == {"task": "classify", **cfg.to_dict()}
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f)["test"] == metrics["test"]
    model, tokenizer, label_map = load_classify_folder(os.path.join(out, "model"))
    assert label_map.labels == list(synth.LABELS) and model.output_shape[-1] == 4
    assert model.kerasllm_task["text_column"] == "text" and model.kerasllm_task["text_pair_column"] is None


def test_tflite_export_agrees_with_keras(run):
    cfg, metrics, _ = run
    export = metrics["export"]
    assert os.path.isfile(export["path"]) and os.path.isfile(os.path.join(cfg.out, "model.labels.json"))
    assert export["example_argmax_agreement"] >= 0.95  # dynamic-range int8 weights vs float Keras
    assert abs(export["tflite_accuracy"] - export["keras_accuracy"]) <= 0.05
    assert export["keras_accuracy"] == pytest.approx(metrics["test"]["accuracy"])


def test_model_folder_start_copies_the_encoder_and_says_the_head_is_fresh(tmp_path):
    from kerasllm.models import bert_encoder, get_preset, save_pretrained
    from kerasllm.tokenizers import WordPieceTokenizer
    from kerasllm.training.classify_finetune import ClassifyTask
    from kerasllm.training.finetune import build_model_and_tokenizer
    from kerasllm.training.finetune_config import ClassifyFinetuneConfig

    encoder = bert_encoder(get_preset("bert-tiny", vocab_size=len(VOCAB), freeze_layers=1))  # frozen in its own run
    save_pretrained(encoder, tmp_path / "enc")
    WordPieceTokenizer(VOCAB).save(tmp_path / "enc")
    lines = []
    task = ClassifyTask()
    cfg = ClassifyFinetuneConfig(model=str(tmp_path / "enc"))
    model, tokenizer = build_model_and_tokenizer(cfg, [], 3, task.head, task.label, lines.append)
    assert tokenizer.vocab_size == len(VOCAB) and model.output_shape == (None, 3)
    for name in ("embeddings", "encoder_layer_1", "pooler"):
        for mine, theirs in zip(model.get_layer(name).get_weights(), encoder.get_layer(name).get_weights()):
            np.testing.assert_array_equal(mine, theirs)
    assert lines == [f"model: {cfg.model} (4 layers loaded; classifier initialised fresh)"]
    assert len(model.trainable_weights) == len(model.weights)  # this run did not ask for --freeze-layers


def test_resume_refuses_other_settings_and_missing_backup(tmp_path):
    from kerasllm.training.finetune import prepare_output
    from kerasllm.training.finetune_config import ClassifyFinetuneConfig

    out = str(tmp_path / "run")
    first = ClassifyFinetuneConfig(out=out, epochs=2)
    with pytest.raises(ValueError, match="no backup to resume from"):
        prepare_output(ClassifyFinetuneConfig(out=out, resume=True), "classify")
    prepare_output(first, "classify")
    os.makedirs(os.path.join(out, "backup"))
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.0005 -> 0.001\)"):
        prepare_output(ClassifyFinetuneConfig(out=out, epochs=2, lr=1e-3, resume=True), "classify")
    prepare_output(ClassifyFinetuneConfig(out=out, epochs=2, resume=True, export=False), "classify")
    assert os.path.isdir(os.path.join(out, "backup"))  # resumable: kept
    notes = []
    prepare_output(first, "classify", log=notes.append)  # a fresh start removes the stale backup
    assert not os.path.exists(os.path.join(out, "backup")) and "removing the backup" in notes[0]


def test_config_validation_names_the_option():
    from kerasllm.training.finetune_config import ClassifyFinetuneConfig

    for kwargs, message in [
        (dict(select="f1"), "--select 'f1': choose one of accuracy, macro_f1"),
        (dict(strategy="gpu"), "--strategy 'gpu'"),
        (dict(devices="/cpu:0"), "--devices applies to --strategy mirrored only"),
        (dict(text_column="x", label_column="x"), "must differ"),
        (dict(lora_rank=4, lora_targets=" , "), "--lora-targets is empty"),
        (dict(freeze_layers=-1), "--freeze-layers must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            ClassifyFinetuneConfig(**kwargs).validate()


@pytest.mark.parametrize("name", [
    "kerasllm.training.finetune",
    "kerasllm.training.finetune_config",
    "kerasllm.training.classify_finetune",
    "kerasllm.evaluation.classification",
    "kerasllm.data.synthetic_classification",
])
def test_docstring_examples(name):
    import doctest
    import importlib

    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs=vars(module).copy(), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
