"""Model builders: parameter counts, gradients, compilation, mixed precision, saving."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kerasllm import models
from kerasllm.models import get_preset, summary

VOCAB = 97


def _tiny(kind):
    """(model, inputs, target) for each model type, tiny and without dropout."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, (3, 7)).astype(np.int32)
    mask = np.ones((3, 7), np.int32)
    mask[1, 5:] = 0
    types = np.zeros_like(ids)
    types[:, 4:] = 1
    bert = dict(input_ids=ids, attention_mask=mask, token_type_ids=types)
    small = dict(vocab_size=VOCAB, num_layers=2, dropout=0.0, attention_dropout=0.0)
    if kind == "token_classification":
        return models.token_classifier(get_preset("bert-tiny", **small), 5), bert
    if kind == "sequence_classification":
        return models.sequence_classifier(get_preset("bert-tiny", **small), 3), bert
    if kind == "encoder":
        return models.bert_encoder(get_preset("bert-tiny", **small)), bert
    if kind == "pretraining":
        return models.bert_pretraining(get_preset("bert-tiny", **small)), bert
    if kind == "causal_lm":
        cfg = get_preset("gpt-tiny", hidden_size=64, num_heads=4, max_position=32, **small)
        return models.gpt_decoder(cfg), dict(input_ids=ids, attention_mask=mask)
    if kind == "seq2seq_lm":
        cfg = get_preset("t5-tiny", **small)
        return models.encoder_decoder(cfg), dict(
            encoder_input_ids=ids, encoder_attention_mask=mask, decoder_input_ids=ids[:, :5], decoder_attention_mask=mask[:, :5]
        )
    raise KeyError(kind)


KINDS = ["token_classification", "sequence_classification", "encoder", "pretraining", "causal_lm", "seq2seq_lm"]


def _scalar_loss(outputs):
    return tf.add_n([tf.reduce_sum(tf.square(tf.cast(o, tf.float32))) for o in tf.nest.flatten(outputs)])


def test_published_parameter_counts():
    # BERT-base without heads, pooler included; GPT-2 small with its tied LM head.
    assert summary(get_preset("bert-base"))["parameters"] == 109_482_240
    assert summary(get_preset("gpt2"))["parameters"] == 124_439_808
    assert models.bert_encoder(get_preset("bert-base")).count_params() == 109_482_240
    assert models.gpt_decoder(get_preset("gpt2")).count_params() == 124_439_808


@pytest.mark.parametrize("preset", ["bert-tiny", "bert-mini", "gpt-tiny", "t5-tiny"])
def test_summary_counts_match_built_models(preset):
    config = get_preset(preset, vocab_size=500)
    assert models.build_model(config).count_params() == summary(config)["parameters"]


def test_summary_flops_per_token_known_answer():
    # bert-tiny, seq 128: 2 layers x (4*128^2 + 2*128*512) = 2 x (65,536 + 131,072) = 393,216
    # matmul weights per token -> 786,432 FLOPs, plus 2 layers x 4 x 128 x 128 = 131,072 for
    # attention scores and the weighted sum.
    assert summary(get_preset("bert-tiny"), seq_len=128)["flops_per_token"] == 786_432 + 131_072


@pytest.mark.parametrize("kind", KINDS)
def test_every_trainable_weight_gets_a_gradient(kind):
    model, inputs = _tiny(kind)
    with tf.GradientTape() as tape:
        loss = _scalar_loss(model(inputs, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    missing = [v.name for v, g in zip(model.trainable_variables, grads) if g is None or not np.any(tf.convert_to_tensor(g).numpy())]
    assert missing == []


@pytest.mark.parametrize("kind", ["token_classification", "causal_lm"])
def test_train_step_compiles_with_xla(kind):
    model, inputs = _tiny(kind)
    labels = np.random.default_rng(1).integers(0, 5 if kind == "token_classification" else VOCAB, inputs["input_ids"].shape)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    history = model.fit(inputs, labels, epochs=3, batch_size=3, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_train_step(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model, inputs = _tiny("token_classification")
        assert model.get_layer("encoder_layer_0").compute_dtype == policy.split("_")[1]
        logits = model(inputs)
        assert logits.dtype == tf.float32
        labels = np.random.default_rng(2).integers(0, 5, inputs["input_ids"].shape)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(inputs, labels, epochs=2, batch_size=3, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _outputs(model, inputs):
    return [np.asarray(o) for o in tf.nest.flatten(model(inputs, training=False))]


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_reload_identical_in_every_format(kind, tmp_path):
    model, inputs = _tiny(kind)
    want = _outputs(model, inputs)
    model.save(tmp_path / "model.keras")
    model.save(tmp_path / "model.h5")
    model.save(tmp_path / "savedmodel", save_format="tf")
    models.save_pretrained(model, tmp_path / "folder")
    reloaded = [keras.models.load_model(tmp_path / name) for name in ("model.keras", "model.h5", "savedmodel")]
    reloaded.append(models.load_pretrained(tmp_path / "folder"))
    for other in reloaded:
        for a, b in zip(want, _outputs(other, inputs)):
            assert np.abs(a - b).max() == 0.0


def test_gpt_cached_forward_matches_full_forward():
    model, inputs = _tiny("causal_lm")
    ids = inputs["input_ids"][:1]
    full = model({"input_ids": ids, "attention_mask": np.ones_like(ids)}).numpy()
    config = model.kerasllm_config
    cache = models.init_cache(config, 1, 16)
    logits, cache = models.call_with_cache(model, ids[:, :4], cache, 0)
    steps = [logits.numpy()]
    for i in range(4, ids.shape[1]):
        logits, cache = models.call_with_cache(model, ids[:, i : i + 1], cache, i)
        steps.append(logits.numpy())
    assert np.abs(np.concatenate(steps, 1) - full).max() < 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_models_contain_only_tf_keras_layers(kind):
    import keras as keras3

    model, _ = _tiny(kind)
    for layer in model._flatten_layers(include_self=False):
        assert isinstance(layer, keras.layers.Layer), layer.name
        assert not isinstance(layer, keras3.layers.Layer), f"Keras 3 layer {layer.name} inside a tf_keras model"


def test_save_pretrained_keeps_old_model_when_saving_fails(tmp_path, monkeypatch):
    model, inputs = _tiny("token_classification")
    models.save_pretrained(model, tmp_path / "m")
    before = (tmp_path / "m" / "model.weights.h5").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_weights", broken)
    with pytest.raises(OSError):
        models.save_pretrained(model, tmp_path / "m")
    assert (tmp_path / "m" / "model.weights.h5").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
