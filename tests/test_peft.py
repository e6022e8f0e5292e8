"""Parameter-efficient fine-tuning: LoRA, adapters, freezing, merging, counting, saving and export.

Numerics are checked against float64 NumPy re-implementations (tests/numpy_reference.py
plus the LoRA and adapter equations written out here); parameter counts against
hand-computed formulas; "only these variables train" by comparing every variable
before and after real optimizer steps.
"""
import doctest
import importlib

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kerasllm.layers import Adapter, FeedForward, LoRA, MultiHeadAttention, TransformerEncoderBlock
from kerasllm.models import (
    TransformerConfig,
    call_with_cache,
    encoder_decoder,
    get_preset,
    gpt_decoder,
    init_cache,
    load_pretrained,
    save_pretrained,
    sequence_classifier,
    token_classifier,
)
from kerasllm.models.peft import HEAD_LAYERS, describe_peft, freeze, merge_peft, parameter_counts, with_peft
from tests import numpy_reference as ref

VOCAB, LABELS = 60, 3
L, D, H, F = 2, 16, 2, 32  # layers, width, heads, feed-forward width of the tiny model


def tiny_config(**overrides):
    settings = dict(
        vocab_size=VOCAB, num_layers=L, hidden_size=D, num_heads=H, intermediate_size=F, max_position=16,
        dropout=0.0, attention_dropout=0.0,
    )
    settings.update(overrides)
    return get_preset("bert-tiny", **settings)


def batch(seed=0, n=3, seq=7):
    rng = np.random.default_rng(seed)
    mask = np.ones((n, seq), np.int32)
    mask[0, 4:] = 0
    ids = rng.integers(1, VOCAB, (n, seq)).astype(np.int32) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def randomize_peft(model, seed=0, scale=0.2):
    """Give LoRA ``lora_b`` and adapter ``up`` weights non-zero values (as training would)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "lora_b" in w.name or "_adapter/up/" in w.name:
            w.assign(rng.normal(0, scale, w.shape).astype(np.float32))


def g64(variable):
    return variable.numpy().astype(np.float64)


def lora_delta(lora):
    return lora.alpha / lora.rank * g64(lora.lora_a) @ g64(lora.lora_b)


# ------------------------------------------------------------------ layers against NumPy


@pytest.mark.parametrize("targets", [("query", "value"), ("key", "output")])
def test_lora_attention_matches_numpy(targets):
    rank, alpha = 3, 6.0
    layer = MultiHeadAttention(num_heads=2, lora_rank=rank, lora_alpha=alpha, lora_targets=targets)
    x = np.random.default_rng(1).normal(size=(2, 5, 8)).astype(np.float32)
    layer(x)
    ref.randomize(layer, seed=2)  # kernels, biases and both LoRA factors
    w = ref.attention_weights(layer)
    # x @ (W + alpha / r * A @ B) on the adapted slices of the fused [Q | K | V] kernel.
    for target in targets:
        key = {"query": "wq", "key": "wk", "value": "wv", "output": "wo"}[target]
        w[key] = w[key] + alpha / rank * g64(getattr(layer, f"{target}_lora").lora_a) @ g64(
            getattr(layer, f"{target}_lora").lora_b
        )
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)[:, None, None, :]
    expected, _ = ref.attention(x.astype(np.float64), x.astype(np.float64), w, 2, mask=mask)
    got = layer(x, attention_mask=mask[:, 0, 0].astype(np.int32)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # The base projections are frozen; only the factors train.
    assert sorted(v.name.split("/")[-2] for v in layer.trainable_weights) == sorted(
        [f"{t}_lora" for t in targets] * 2
    )


def test_lora_cross_attention_adapts_query_and_the_kv_slices():
    layer = MultiHeadAttention(
        num_heads=2, cross_attention=True, context_dim=6, lora_rank=2, lora_targets=("query", "key", "value")
    )
    rng = np.random.default_rng(3)
    x, ctx = rng.normal(size=(1, 4, 8)).astype(np.float32), rng.normal(size=(1, 5, 6)).astype(np.float32)
    layer(x, context=ctx)
    ref.randomize(layer, seed=4)
    w = ref.attention_weights(layer)
    for target, key in (("query", "wq"), ("key", "wk"), ("value", "wv")):
        w[key] = w[key] + lora_delta(getattr(layer, f"{target}_lora"))
    expected, _ = ref.attention(x.astype(np.float64), ctx.astype(np.float64), w, 2)
    np.testing.assert_allclose(layer(x, context=ctx).numpy(), expected, atol=1e-5)
    # The precomputed cache of the context carries the LoRA updates too.
    cached, _ = layer(x, cache=layer.compute_kv(ctx))
    np.testing.assert_allclose(cached.numpy(), expected, atol=1e-5)


def test_lora_feedforward_matches_numpy():
    ffn = FeedForward(intermediate_size=12, lora_rank=2, lora_alpha=4.0)
    x = np.random.default_rng(5).normal(size=(2, 3, 8)).astype(np.float32)
    ffn(x)
    ref.randomize(ffn, seed=6)
    w1 = g64(ffn.intermediate.kernel) + lora_delta(ffn.intermediate_lora)
    w2 = g64(ffn.output_dense.kernel) + lora_delta(ffn.output_lora)
    h = ref.gelu(x @ w1 + g64(ffn.intermediate.bias))
    np.testing.assert_allclose(ffn(x).numpy(), h @ w2 + g64(ffn.output_dense.bias), atol=1e-5)


def _adapter(layer, z):
    down, up = layer.down, layer.up
    return z + ref.ACTIVATIONS[layer.activation](z @ g64(down.kernel) + g64(down.bias)) @ g64(up.kernel) + g64(up.bias)


def test_adapter_starts_as_identity_and_matches_numpy():
    adapter = Adapter(adapter_size=4, activation="relu")
    x = np.random.default_rng(7).normal(size=(2, 3, 8)).astype(np.float32)
    np.testing.assert_array_equal(adapter(x).numpy(), x)
    ref.randomize(adapter, seed=8)
    np.testing.assert_allclose(adapter(x).numpy(), _adapter(adapter, x.astype(np.float64)), atol=1e-5)


@pytest.mark.parametrize("normalize_first", [False, True])
def test_encoder_block_with_adapters_matches_houlsby_placement(normalize_first):
    block = TransformerEncoderBlock(
        num_heads=2, intermediate_size=16, dropout=0.0, attention_dropout=0.0,
        normalize_first=normalize_first, adapter_size=3,
    )
    x = np.random.default_rng(9).normal(size=(2, 4, 8)).astype(np.float32)
    block(x)
    ref.randomize(block, seed=10)
    w = ref.attention_weights(block.attention)
    # The adapter transforms each branch before the residual add (and the post-LN norm).
    h = ref.residual(
        x.astype(np.float64), block.attention_norm,
        lambda z: _adapter(block.attention_adapter, ref.attention(z, z, w, 2)[0]), normalize_first,
    )
    y = ref.residual(
        h, block.ffn_norm, lambda z: _adapter(block.ffn_adapter, ref.ffn(block.ffn, z, "gelu")), normalize_first
    )
    np.testing.assert_allclose(block(x).numpy(), y, atol=1e-5)


def test_block_config_round_trip_keeps_peft_arguments():
    block = TransformerEncoderBlock(
        num_heads=2, intermediate_size=16, lora_rank=2, lora_alpha=8.0, lora_dropout=0.1,
        lora_targets=("value", "ffn"), adapter_size=5,
    )
    config = TransformerEncoderBlock.from_config(block.get_config()).get_config()
    assert {k: config[k] for k in ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "adapter_size")} == {
        "lora_rank": 2, "lora_alpha": 8.0, "lora_dropout": 0.1, "lora_targets": ["value", "ffn"], "adapter_size": 5,
    }
    lora = LoRA(2, output_dim=6, alpha=3.0, dropout=0.2)
    assert LoRA.from_config(lora.get_config()).get_config() == lora.get_config()


# ------------------------------------------------------------------ with_peft on models


@pytest.fixture(scope="module")
def base():
    tf.keras.utils.set_random_seed(0)
    return token_classifier(tiny_config(), num_labels=LABELS)


def test_fresh_lora_and_adapter_model_equals_base(base):
    x = batch()
    expected = base(x).numpy()
    model = with_peft(base, lora_rank=4, lora_targets=("query", "key", "value", "output", "ffn"), adapter_size=4)
    np.testing.assert_array_equal(model(x).numpy(), expected)
    assert model.kerasllm_task == base.kerasllm_task
    # Base weights keep their names (checkpoint tables still apply); PEFT weights are new names.
    base_names = {w.name for w in base.weights}
    new_names = {w.name for w in model.weights} - base_names
    assert base_names <= {w.name for w in model.weights}
    assert new_names and all(("_lora/" in n) or ("_adapter/" in n) for n in new_names)


def _train(model, steps=4, seed=0, lr=1e-2):
    rng = np.random.default_rng(seed)
    x = batch(seed, n=8)
    labels = rng.integers(0, LABELS, x["input_ids"].shape).astype(np.int32)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {w.name: w.numpy().copy() for w in model.weights}
    model.fit(tf.data.Dataset.from_tensor_slices((x, labels)).batch(4).repeat(), steps_per_epoch=steps, verbose=0)
    return {w.name for w in model.weights if not np.array_equal(before[w.name], w.numpy())}


def _is_peft(name):
    return "_lora/" in name or "_adapter/" in name


@pytest.mark.parametrize(
    "settings, trains",
    [
        (dict(lora_rank=2, adapter_size=3, lora_targets=("query", "value", "ffn")),
         lambda n: _is_peft(n) or n.startswith("classifier/")),
        (dict(lora_rank=2, freeze_layers=1),
         lambda n: (_is_peft(n) and n.startswith("encoder_layer_1/")) or n.startswith("classifier/")),
        (dict(freeze_embeddings=True, freeze_layers=1),
         lambda n: not n.startswith(("embeddings/", "encoder_layer_0/"))),
    ],
    ids=["lora+adapters", "lora+freeze1", "freeze-only"],
)
def test_training_changes_exactly_the_intended_variables(base, settings, trains):
    model = with_peft(base, **settings)
    changed = _train(model)
    intended = {w.name for w in model.weights if trains(w.name)}
    assert changed == intended
    assert {w.name for w in model.trainable_weights} == intended


def test_sequence_classifier_keeps_pooler_and_classifier_trainable():
    model = with_peft(sequence_classifier(tiny_config(), num_labels=2), lora_rank=2)
    heads = {w.name.split("/")[0] for w in model.trainable_weights if not _is_peft(w.name)}
    assert heads == {"pooler", "classifier"} and heads <= set(HEAD_LAYERS)


def test_merge_folds_lora_into_base_kernels(base):
    model = with_peft(base, lora_rank=3, lora_alpha=5.0, lora_targets=("query", "value", "output", "ffn"))
    randomize_peft(model, seed=1)
    x = batch(2)
    merged = merge_peft(model)
    np.testing.assert_allclose(merged(x).numpy(), model(x).numpy(), atol=1e-5)
    assert merged.kerasllm_config.lora_rank == 0 and merged.kerasllm_config == model.kerasllm_config.replace(lora_rank=0)
    assert sorted(w.name for w in merged.weights) == sorted(w.name for w in base.weights)
    assert parameter_counts(merged)["trainable"] == parameter_counts(base)["total"]  # a plain model again
    # W_qkv + alpha/r * A @ B on the Q and V column blocks; K untouched.
    attention = model.get_layer("encoder_layer_1").attention
    expected = g64(attention.qkv_kernel)
    expected[:, :D] += lora_delta(attention.query_lora)
    expected[:, 2 * D:] += lora_delta(attention.value_lora)
    got = merged.get_layer("encoder_layer_1").attention.qkv_kernel.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_merge_keeps_adapters(base):
    model = with_peft(base, lora_rank=2, adapter_size=3)
    randomize_peft(model, seed=2)
    merged = merge_peft(model)
    x = batch(3)
    np.testing.assert_allclose(merged(x).numpy(), model(x).numpy(), atol=1e-5)
    names = {w.name for w in merged.trainable_weights}
    assert any("_adapter/" in n for n in names) and not any("_lora/" in n for n in names)
    assert describe_peft(merged.kerasllm_config) == "adapters of size 3"


def test_gpt_lora_cache_path_and_merge():
    config = get_preset("gpt-tiny", vocab_size=VOCAB, num_layers=2, hidden_size=D, num_heads=H, max_position=16)
    model = with_peft(gpt_decoder(config), lora_rank=2, lora_targets=("query", "key", "value", "output"))
    randomize_peft(model, seed=3)
    ids = np.random.default_rng(4).integers(1, VOCAB, (1, 6)).astype(np.int32)
    full = model({"input_ids": ids, "attention_mask": np.ones_like(ids)}).numpy()
    cached, _ = call_with_cache(model, ids, init_cache(config, 1, 8), 0, attention_mask=np.ones((1, 8), np.int32))
    np.testing.assert_allclose(cached.numpy(), full, atol=1e-5)
    merged = merge_peft(model)(({"input_ids": ids, "attention_mask": np.ones_like(ids)})).numpy()
    np.testing.assert_allclose(merged, full, atol=1e-5)


def test_encoder_decoder_cross_attention_lora_merges():
    config = get_preset("t5-tiny", vocab_size=VOCAB, hidden_size=D, num_heads=H, intermediate_size=F, num_layers=1)
    model = with_peft(encoder_decoder(config), lora_rank=2, lora_targets=("key", "value"))
    assert model.get_layer("decoder_layer_0").cross_attention.key_lora is not None
    randomize_peft(model, seed=5)
    rng = np.random.default_rng(6)
    x = {
        "encoder_input_ids": rng.integers(1, VOCAB, (2, 5)), "encoder_attention_mask": np.ones((2, 5)),
        "decoder_input_ids": rng.integers(1, VOCAB, (2, 4)), "decoder_attention_mask": np.ones((2, 4)),
    }
    np.testing.assert_allclose(merge_peft(model)(x).numpy(), model(x).numpy(), atol=1e-5)


# ------------------------------------------------------------------ counting and describing


def test_parameter_counts_match_hand_computed(base):
    r, m = 4, 3
    emb = VOCAB * D + 16 * D + 2 * D + 2 * D
    block = (3 * D * D + 3 * D) + (D * D + D) + 2 * D + (D * F + F) + (F * D + D) + 2 * D
    head = D * LABELS + LABELS
    total = emb + L * block + head
    assert parameter_counts(base) == {"trainable": total, "total": total, "fraction": 1.0}

    lora_qv = L * 2 * (D * r + r * D)
    counts = parameter_counts(with_peft(base, lora_rank=r))
    assert counts["trainable"] == lora_qv + head and counts["total"] == total + lora_qv
    lora_ffn = L * ((D * r + r * F) + (F * r + r * D))
    adapters = L * 2 * ((D * m + m) + (m * D + D))
    counts = parameter_counts(with_peft(base, lora_rank=r, lora_targets=("query", "value", "ffn"), adapter_size=m))
    assert counts["trainable"] == lora_qv + lora_ffn + adapters + head
    assert counts["total"] == total + lora_qv + lora_ffn + adapters
    counts = parameter_counts(with_peft(base, freeze_embeddings=True, freeze_layers=1))
    assert counts["trainable"] == total - emb - block


def test_describe_peft(base):
    model = with_peft(base, lora_rank=8, freeze_layers=1)
    counts = parameter_counts(model)
    assert describe_peft(model) == (
        f"LoRA rank 8 alpha 16 on query,value, lowest 1 of 2 layers frozen; "
        f"{100 * counts['fraction']:.1f}% of {counts['total'] / 1e3:.1f}K parameters trainable"
    )
    assert describe_peft(base.kerasllm_config) == "full fine-tuning"
    assert describe_peft(tiny_config(lora_rank=2, lora_dropout=0.1, lora_targets="value,ffn")) == (
        "LoRA rank 2 alpha 16 on value,ffn dropout 0.1"
    )


# ------------------------------------------------------------------ freezing, saving, errors


def test_freeze_in_place_records_in_config_and_only_adds():
    model = token_classifier(tiny_config(), num_labels=LABELS)
    freeze(model, layers=1)
    freeze(model, embeddings=True)
    frozen = [layer.name for layer in model.layers if layer.weights and not layer.trainable]
    assert frozen == ["embeddings", "encoder_layer_0"]
    assert (model.kerasllm_config.freeze_embeddings, model.kerasllm_config.freeze_layers) == (True, 1)


def test_save_load_round_trip_of_a_lora_model(base, tmp_path):
    model = with_peft(base, lora_rank=2, lora_alpha=4.0, lora_targets=("value", "ffn"), adapter_size=2, freeze_layers=1)
    randomize_peft(model, seed=7)
    save_pretrained(model, tmp_path / "lora")
    loaded = load_pretrained(tmp_path / "lora")
    assert loaded.kerasllm_config == model.kerasllm_config
    assert loaded.kerasllm_config.lora_targets == ("value", "ffn")
    assert [w.name for w in loaded.trainable_weights] == [w.name for w in model.trainable_weights]
    x = batch(4)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    # A functional-config round trip (tf_keras formats) builds the same model.
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone(x).numpy(), model(x).numpy())


def test_config_json_round_trip_with_peft_fields(tmp_path):
    config = tiny_config(lora_rank=8, lora_alpha=32.0, lora_dropout=0.05, lora_targets=["query", "ffn"],
                         adapter_size=16, freeze_embeddings=True, freeze_layers=2)
    config.save(tmp_path / "config.json")
    assert TransformerConfig.load(tmp_path / "config.json") == config
    assert TransformerConfig.from_dict(config.to_dict()) == config
    # Old config files without the new fields load with everything off.
    old = {k: v for k, v in config.to_dict().items() if not k.startswith(("lora_", "adapter_", "freeze_"))}
    assert not TransformerConfig.from_dict(old).uses_peft


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(lora_rank=2, lora_targets=("query", "attention")), r"unknown LoRA target 'attention'; allowed values: \['query'"),
        (dict(lora_rank=-1), r"lora_rank=-1 is invalid: must be an integer >= 0"),
        (dict(lora_rank=2, lora_alpha=0), r"lora_alpha=0 is invalid: must be a number > 0"),
        (dict(lora_rank=2, lora_dropout=1.5), r"lora_dropout=1.5 is invalid"),
        (dict(adapter_size=-2), r"adapter_size=-2 is invalid"),
        (dict(freeze_layers=3), r"freeze_layers=3 is invalid: must be an integer from 0 to the model's 2 blocks"),
        (dict(lora_rank=2, lora_targets=()), r"lora_rank=2 needs at least one of"),
    ],
)
def test_bad_arguments_are_clear_value_errors(base, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        with_peft(base, **kwargs)


def test_layer_and_freeze_argument_errors(base):
    with pytest.raises(ValueError, match=r"unknown LoRA target 'ffn'"):
        MultiHeadAttention(num_heads=2, lora_rank=2, lora_targets=("ffn",))
    with pytest.raises(ValueError, match=r"lora_rank=-2 is invalid"):
        FeedForward(8, lora_rank=-2)
    with pytest.raises(ValueError, match=r"freeze_layers=5 is invalid"):
        freeze(token_classifier(tiny_config(), num_labels=2), layers=5)
    with pytest.raises(ValueError, match=r"merge_peft\(model\) first"):
        with_peft(with_peft(base, lora_rank=2), lora_rank=4)
    with pytest.raises(ValueError, match=r"needs a model built by kerasllm.models"):
        with_peft(keras.Sequential([keras.layers.Dense(2)]), lora_rank=2)


def test_with_peft_inside_a_mirrored_strategy(base):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = with_peft(base, lora_rank=2)
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert all(isinstance(w, tf.distribute.DistributedValues) for w in model.weights)
    x = batch(8, n=4)
    labels = np.zeros_like(x["input_ids"])
    lora_b = model.get_layer("encoder_layer_0").attention.value_lora.lora_b
    model.fit(tf.data.Dataset.from_tensor_slices((x, labels)).batch(4), epochs=2, verbose=0)
    assert np.abs(lora_b.numpy()).max() > 0


# ------------------------------------------------------------------ export


def test_merged_lora_model_with_adapters_exports_to_tflite_and_onnx(base, tmp_path):
    from kerasllm.export import OnnxRunner, TFLiteRunner, export_onnx, export_tflite, verify

    model = with_peft(base, lora_rank=2, adapter_size=3)
    randomize_peft(model, seed=9)
    merged = merge_peft(model)  # LoRA folded in, adapters stay
    batches = [batch(10), batch(11, n=2, seq=5)]
    for export, runner in ((export_tflite, TFLiteRunner), (export_onnx, OnnxRunner)):
        report = export(merged, tmp_path / f"peft.{'tflite' if export is export_tflite else 'onnx'}")
        result = verify(model, runner(report.path), batches)  # against the unmerged Keras model
        assert result["max_abs_diff"] < 1e-4 and result["argmax_agreement"] == 1.0, result


@pytest.mark.parametrize("name", ["kerasllm.layers.lora", "kerasllm.layers.adapter", "kerasllm.models.peft"])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs=vars(module).copy(), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_save_hf_writes_a_lora_model_merged_and_refuses_adapters(base, tmp_path):
    from kerasllm.checkpoints import save_hf
    from kerasllm.models import from_pretrained

    model = with_peft(base, lora_rank=2, lora_alpha=4.0, lora_targets=("query", "value", "ffn"))
    randomize_peft(model, seed=3)
    save_hf(model, tmp_path / "hf")
    loaded = from_pretrained(str(tmp_path / "hf"))
    assert loaded.kerasllm_config.lora_rank == 0
    x = batch(5)
    # The Hugging Face folder computes what the unmerged LoRA model computes; without
    # the LoRA updates (the base model) it would not.
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-5)
    assert np.max(np.abs(base(x).numpy() - model(x).numpy())) > 1e-3

    with pytest.raises(ValueError, match="adapter_size=2"):
        save_hf(with_peft(base, adapter_size=2), tmp_path / "adapters")
    assert not (tmp_path / "adapters").exists()
