"""kerasllm.compression on tiny models: pruning, QAT, distillation, low-rank, each against an independent check."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kerasllm import compression
from kerasllm.models import get_preset, gpt_decoder, sequence_classifier, token_classifier
from kerasllm.training import masked_sparse_categorical_crossentropy

VOCAB, HIDDEN, FFN, POSITIONS, LABELS = 60, 16, 32, 24, 5
# Every projection of a 2-block token classifier, as the tests expect them named.
BLOCK_KERNELS = ("attention/qkv_kernel", "attention/output_kernel", "ffn/intermediate/kernel", "ffn/output_dense/kernel")
BLOCK_SHAPES = ((HIDDEN, 3 * HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, FFN), (FFN, HIDDEN))


def tiny_config(**overrides):
    args = dict(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_heads=2, intermediate_size=FFN, max_position=POSITIONS,
        dropout=0.0, attention_dropout=0.0,
    )
    args.update(overrides)
    return get_preset("bert-tiny", **args)


def tiny_classifier(seed=0, num_layers=2, labels=None):
    tf.keras.utils.set_random_seed(seed)
    model = token_classifier(tiny_config(num_layers=num_layers), LABELS)
    if labels is not None:
        model.kerasllm_task = {**model.kerasllm_task, "labels": list(labels)}
    return model


def batch(seed=0, n=8, length=12, masked_tail=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((n, length), np.int32)
    if masked_tail:
        mask[:, -masked_tail:] = 0
    inputs = {
        "input_ids": rng.integers(1, VOCAB, (n, length)).astype(np.int32),
        "attention_mask": mask,
        "token_type_ids": np.zeros((n, length), np.int32),
    }
    labels = rng.integers(0, LABELS, (n, length)).astype(np.int32)
    labels[mask == 0] = -100
    return inputs, labels


def kernel(model, layer, path):
    obj = model.get_layer(layer)
    for part in path.split("/"):
        obj = getattr(obj, part)
    return obj.numpy()


def train_pruned(pruned, steps=3, lr=1e-2):
    inputs, labels = batch()
    # eager: tracing a training graph costs far more than a few steps of a tiny model
    pruned.compile(optimizer=keras.optimizers.Adam(lr), loss=masked_sparse_categorical_crossentropy(), run_eagerly=True)
    pruned.fit(inputs, labels, batch_size=8, epochs=steps, callbacks=compression.pruning_callbacks(), verbose=0)
    return pruned


# ------------------------------------------------------------------------------ pruning


@pytest.fixture(scope="module")
def pruned_60():
    """A tiny classifier pruned to 60% (constant schedule) and stripped, with its dense original."""
    dense = tiny_classifier()
    before = [w.copy() for w in dense.get_weights()]
    pruned = train_pruned(compression.prune_model(dense, sparsity=0.6, frequency=1))
    return dense, before, compression.strip_pruning(pruned)


def test_pruned_weights_are_zero_at_the_reported_fraction(pruned_60):
    dense, before, sparse = pruned_60
    report = {row["name"]: row for row in compression.sparsity_report(sparse)["weights"]}
    for block in ("encoder_layer_0", "encoder_layer_1"):
        for path, shape in zip(BLOCK_KERNELS, BLOCK_SHAPES):
            value = kernel(sparse, block, path)
            assert value.shape == shape
            size = value.size
            kept = int(np.round(size * 0.4))  # TF-MOT keeps round(size * (1 - s)) weights
            zeros = int(np.sum(value == 0))
            assert size - kept - 1 <= zeros <= size - kept, (block, path, zeros, size)
            row = report[f"{block}/{path}"]
            assert row["zeros"] == zeros and row["sparsity"] == pytest.approx(zeros / size)
    # nothing else was pruned: embeddings, biases, layer norms and the classifier keep their values
    for name in ("embeddings/token_embeddings", "classifier/kernel"):
        assert report[name]["zeros"] == 0
    assert np.all(sparse.get_layer("encoder_layer_0").attention_norm.gamma.numpy() != 0)
    # the input model was not modified
    for old, now in zip(before, dense.get_weights()):
        np.testing.assert_array_equal(old, now)


def test_stripped_model_matches_the_pruning_model_and_keeps_its_layers(pruned_60):
    _, _, sparse = pruned_60
    assert [layer.name for layer in sparse.layers] == [layer.name for layer in tiny_classifier().layers]
    assert sparse.kerasllm_task["task"] == "token_classification"
    total, nonzero = compression.parameter_counts(sparse)
    weights = sparse.get_weights()
    assert total == sum(w.size for w in weights)
    assert nonzero == sum(int(np.count_nonzero(w)) for w in weights)


def test_mask_survives_tflite_export(pruned_60, tmp_path):
    from kerasllm.export import export_tflite

    _, _, sparse = pruned_60
    report = export_tflite(sparse, tmp_path / "sparse.tflite")
    found = compression.tflite_weight_sparsity(report.path, BLOCK_SHAPES)
    for shape in BLOCK_SHAPES:
        expected = [
            float(np.mean(kernel(sparse, block, path) == 0))
            for block in ("encoder_layer_0", "encoder_layer_1")
            for path, s in zip(BLOCK_KERNELS, BLOCK_SHAPES)
            if s == shape
        ]
        stored = found.get(shape, []) + found.get(tuple(reversed(shape)), [])
        # every pruned kernel of this shape is in the file with its zeros
        for fraction in expected:
            assert any(abs(fraction - s) < 1e-9 for s in stored), (shape, expected, stored)


def test_two_of_four_structured_sparsity():
    pruned = train_pruned(compression.prune_model(tiny_classifier(1), m_by_n=(2, 4)), steps=2)
    sparse = compression.strip_pruning(pruned)
    for path, shape in zip(BLOCK_KERNELS, BLOCK_SHAPES):
        value = kernel(sparse, "encoder_layer_1", path)
        groups = (value == 0).reshape(shape[0] // 4, 4, shape[1]).sum(axis=1)  # 4 consecutive inputs per output
        assert np.all(groups >= 2), path


def test_polynomial_schedule_and_iterative_rounds():
    schedule = compression.make_schedule(0.8, "polynomial", begin_step=0, end_step=10, frequency=1)
    # Zhu & Gupta's cubic ramp: s_t = s_f + (s_i - s_f) (1 - t / T)^3
    for step in (0, 5, 10):
        expected = 0.8 + (0.0 - 0.8) * (1 - step / 10) ** 3
        assert float(schedule(tf.constant(step, tf.int64))[1]) == pytest.approx(expected, abs=1e-6)
    seen = []

    def fit(pruned, round_index):
        train_pruned(pruned, steps=1)
        seen.append(compression.sparsity_report(compression.strip_pruning(pruned))["total"]["sparsity"])

    final = compression.prune_iteratively(tiny_classifier(2), fit, sparsity=0.5, rounds=2, frequency=1)
    proj_only = compression.sparsity_report(final, include_embeddings=False, include_heads=False)
    assert proj_only["total"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert seen[0] < seen[1]


def test_pruning_can_include_the_embedding_table():
    pruned = train_pruned(compression.prune_model(tiny_classifier(3), 0.5, frequency=1, include_embeddings=True), 1)
    table = compression.strip_pruning(pruned).get_layer("embeddings").token_embeddings.numpy()
    assert np.mean(table == 0) == pytest.approx(0.5, abs=1 / table.size)


def test_pruning_with_the_dense_model_as_teacher_moves_towards_its_logits():
    """``with_teacher``: pruning fine-tuned on the KL to the dense model alone (alpha 0) ends
    nearer the dense model's outputs (NumPy KL) than pruning fine-tuned on random labels,
    at the same sparsity, and the teacher is left untouched."""
    from kerasllm.compression.pipeline import with_teacher

    dense = tiny_classifier(4)
    before = [w.copy() for w in dense.get_weights()]
    inputs, labels = batch(5)
    weights = (labels != -100).astype(np.float64)
    teacher_logits = dense(inputs).numpy()
    kl, sparsity = {}, {}
    for alpha in (None, 0.0):
        pruned = compression.prune_model(dense, sparsity=0.5, frequency=1)
        trainee = with_teacher(pruned, dense, distill_alpha=alpha, temperature=1.0)
        trainee.compile(optimizer=keras.optimizers.Adam(1e-2), loss=masked_sparse_categorical_crossentropy(),
                        run_eagerly=True)
        trainee.fit(inputs, labels, batch_size=8, epochs=8, callbacks=compression.pruning_callbacks(), verbose=0)
        sparse = compression.strip_pruning(pruned)
        kl[alpha] = np_soft(sparse(inputs).numpy(), teacher_logits, 1.0, weights)
        report = compression.sparsity_report(sparse, include_embeddings=False, include_heads=False)
        sparsity[alpha] = report["total"]["sparsity"]
    assert kl[0.0] < 0.5 * kl[None], kl
    assert sparsity[0.0] == pytest.approx(0.5, abs=0.01) and sparsity[None] == pytest.approx(0.5, abs=0.01)
    for old, now in zip(before, dense.get_weights()):
        np.testing.assert_array_equal(old, now)
    with pytest.raises(ValueError, match="--distill-alpha"):
        with_teacher(pruned, dense, distill_alpha=1.0)


@pytest.fixture(scope="module")
def dense():
    return tiny_classifier(5)


@pytest.mark.parametrize("sparsity", [0, 1, 1.5, -0.2, "half"])
def test_sparsity_outside_zero_one_is_refused(dense, sparsity):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        compression.prune_model(dense, sparsity=sparsity)


def test_nothing_prunable_is_refused(dense):
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.Dense(3)(inputs)))
    with pytest.raises(ValueError, match="nothing to prune"):
        compression.prune_model(plain, sparsity=0.5)
    with pytest.raises(ValueError, match="end_step"):
        compression.prune_model(dense, sparsity=0.5, schedule="polynomial")
    with pytest.raises(ValueError, match="m_by_n"):
        compression.prune_model(dense, m_by_n=(4, 2))


# ---------------------------------------------------------------------------------- QAT


def all_projections(model):
    names = ["embeddings/token_embeddings", "embeddings/position_embeddings", "embeddings/token_type_embeddings"]
    for i in range(model.kerasllm_config.num_layers):
        names += [f"encoder_layer_{i}/{k}" for k in BLOCK_KERNELS]
    if "pooler" in [layer.name for layer in model.layers]:
        names.append("pooler/dense/kernel")
    return names + ["classifier/kernel"]


def check_every_projection_quantized(model, qat):
    expected = all_projections(model)
    # the float model: every projection is listed as unquantized (the check can fail)
    assert compression.unquantized_projections(model) == expected
    assert compression.unquantized_projections(qat) == [], "projections left without fake quantization"
    assert compression.fake_quant_count(qat) >= len(expected)


def fit_eagerly(model, seed, lr=1e-3, epochs=2):
    inputs, labels = batch(seed)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=masked_sparse_categorical_crossentropy(), run_eagerly=True)
    model.fit(inputs, labels, batch_size=8, epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="module")
def trained_qat():
    model = tiny_classifier(4)
    qat = compression.quantize_model(model)
    check_every_projection_quantized(model, qat)  # before any training (asserted again below)
    return model, fit_eagerly(qat, 4)


def test_qat_puts_fake_quant_on_every_projection(trained_qat):
    check_every_projection_quantized(*trained_qat)


def test_qat_covers_the_pooler_of_a_sequence_classifier():
    tf.keras.utils.set_random_seed(0)
    model = sequence_classifier(tiny_config(), LABELS)
    check_every_projection_quantized(model, compression.quantize_model(model))


def test_qat_converts_to_full_integer_tflite(trained_qat, tmp_path):
    from ai_edge_litert import interpreter as litert

    from kerasllm.export import TFLiteRunner, export_tflite

    _, qat = trained_qat
    inputs, _ = batch(5)
    report = export_tflite(qat, tmp_path / "qat.tflite", quantize="int8", representative_data=[inputs])
    interpreter = litert.Interpreter(model_path=report.path)
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    heavy = [op for op in interpreter._get_ops_details() if op["op_name"] in ("FULLY_CONNECTED", "BATCH_MATMUL")]
    assert len([op for op in heavy if op["op_name"] == "FULLY_CONNECTED"]) == 9  # 4 per block + classifier
    for op in heavy:
        assert all(dtypes[i] == np.int8 for i in op["inputs"][:2] if i >= 0), op["op_name"]
    logits = TFLiteRunner(report.path)(inputs)["logits"]
    agreement = np.mean(logits.argmax(-1) == qat(inputs).numpy().argmax(-1))
    assert agreement >= 0.8


def test_qat_float_copy_holds_the_trained_weights(trained_qat):
    model, qat = trained_qat
    plain = compression.float_copy(qat)
    assert [w.shape for w in plain.get_weights()] == [w.shape for w in model.get_weights()]
    # the wrapper's first quantized weight is the block's fused qkv kernel (the QuantizeConfig's order)
    trained = qat.get_layer("quant_encoder_layer_0")._weight_vars[0][0]
    assert tuple(trained.shape) == BLOCK_SHAPES[0]
    qkv = plain.get_layer("encoder_layer_0").attention.qkv_kernel.numpy()
    np.testing.assert_array_equal(qkv, trained.numpy())
    assert not np.allclose(qkv, model.get_layer("encoder_layer_0").attention.qkv_kernel.numpy())


def _range(qat_layer, name):
    """``(min, max)`` of the range variables ``name_min``/``name_max`` of a QAT wrapper."""
    found = {w.name.split("/")[-1].split(":")[0]: float(w.numpy()) for w in qat_layer.weights
             if w.name.split("/")[-1].split(":")[0] in (f"{name}_min", f"{name}_max")}
    return found[f"{name}_min"], found[f"{name}_max"]


def test_qat_quantizes_every_tensor_between_matmuls():
    model = tiny_classifier(8)
    every = compression.fake_quant_count(compression.quantize_model(model, activations="all"))
    outputs = compression.fake_quant_count(compression.quantize_model(model, activations="outputs"))
    # Per block, "all" adds 6 attention tensors, 2 layer-norm outputs, 2 residual sums and the
    # FFN output, and drops the block-output quantizer (the last layer norm's output is it).
    assert every - outputs == model.kerasllm_config.num_layers * (6 + 2 + 2 + 1 - 1)
    with pytest.raises(ValueError, match="activations="):
        compression.quantize_model(model, activations="some")


def test_int8_tflite_takes_the_qat_ranges(tmp_path):
    from ai_edge_litert import interpreter as litert

    from kerasllm.export import export_tflite

    qat = compression.quantize_model(tiny_classifier(9))
    wrapper = qat.get_layer("quant_encoder_layer_1")
    ranges = {"attention_qp_scores": (-1.7, 2.3), "attention_qp_output": (-0.9, 1.1),
              "qp_attention_residual": (-5.1, 4.7), "ffn_norm_qp_output": (-3.3, 3.9)}
    for w in wrapper.weights:  # distinct, known ranges, as training would leave them
        key = w.name.split("/")[-1].split(":")[0]
        for name, (low, high) in ranges.items():
            if key in (f"{name}_min", f"{name}_max"):
                w.assign(low if key.endswith("_min") else high)
    for name, want in ranges.items():
        assert _range(wrapper, name) == pytest.approx(want), name
    batches = [batch(seed)[0] for seed in (21, 22)]
    report = export_tflite(qat, tmp_path / "qat.tflite", quantize="int8", representative_data=batches)
    interpreter = litert.Interpreter(model_path=report.path)
    scales = np.array([t["quantization"][0] for t in interpreter.get_tensor_details() if t["dtype"] == np.int8])
    for name, (low, high) in ranges.items():  # each range became an int8 tensor's scale
        assert np.min(np.abs(scales / ((high - low) / 255) - 1)) < 1e-4, name


@pytest.mark.parametrize("preserve", [True, False])
def test_pruning_preserving_qat_keeps_the_zeros(pruned_60, preserve):
    _, _, sparse = pruned_60
    zeros = kernel(sparse, "encoder_layer_0", "attention/qkv_kernel") == 0
    qat = fit_eagerly(compression.quantize_model(sparse, preserve_sparsity=preserve), 6, lr=1e-2)
    after = compression.float_copy(qat).get_layer("encoder_layer_0").attention.qkv_kernel.numpy()
    if preserve:
        assert np.all(after[zeros] == 0)
    else:  # without preservation training refills the pruned weights
        assert np.mean(after[zeros] != 0) > 0.5


# ------------------------------------------------------------------------- distillation


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_soft(student, teacher, temperature, weights):
    log_t = np_log_softmax(teacher / temperature)
    kl = (np.exp(log_t) * (log_t - np_log_softmax(student / temperature))).sum(-1)
    return temperature**2 * (kl * weights).sum() / weights.sum()


def np_hard(student, labels, kind):
    log_p = np_log_softmax(student)
    if kind == "sequence":
        return -np.mean(log_p[np.arange(len(labels)), labels])
    keep = labels != -100
    picked = np.take_along_axis(log_p, np.where(keep, labels, 0)[..., None], -1)[..., 0]
    return -(picked * keep).sum() / keep.sum()


def test_soft_loss_matches_numpy():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 3, 7, 5)) * 3
    weights = (rng.random((3, 7)) > 0.3).astype(np.float32)
    for temperature in (1.0, 2.0, 4.0):
        got = compression.soft_loss(student, teacher, temperature, weights)
        assert float(got) == pytest.approx(np_soft(student, teacher, temperature, weights), rel=1e-5)


@pytest.mark.parametrize("task", ["token_classification", "sequence_classification", "causal_lm"])
def test_distiller_loss_matches_numpy_on_fixed_logits(task):
    rng = np.random.default_rng(1)
    if task == "sequence_classification":
        model = sequence_classifier(tiny_config(num_layers=1), LABELS)
        shape, kind = (4, LABELS), "sequence"
        labels = rng.integers(0, LABELS, 4)
        mask = np.ones((4, 6), np.int32)
    else:
        if task == "causal_lm":
            model = gpt_decoder(get_preset("gpt-tiny", vocab_size=11, num_layers=1, hidden_size=16, num_heads=2))
            classes = 11
        else:
            model, classes = tiny_classifier(num_layers=1), LABELS
        shape, kind = (4, 6, classes), "token"
        labels = rng.integers(0, classes, (4, 6))
        labels[:, -2:] = -100
        mask = np.ones((4, 6), np.int32)
        mask[:, -1] = 0
    student_logits, teacher_logits = (rng.normal(size=shape) * 2).astype(np.float32), (rng.normal(size=shape) * 2).astype(np.float32)
    distiller = compression.Distiller(model, model, task=task, temperature=3.0, alpha=0.3)
    losses = distiller.compute_losses({"attention_mask": mask}, labels, student_logits, teacher_logits)
    # token tasks: the KL is averaged over labelled real tokens only
    weights = np.ones(shape[:-1], np.float32) if kind == "sequence" else (mask * (labels != -100)).astype(np.float32)
    soft = np_soft(student_logits, teacher_logits, 3.0, weights)
    hard = np_hard(student_logits, labels, kind)
    assert float(losses["soft_loss"]) == pytest.approx(soft, rel=1e-5)
    assert float(losses["hard_loss"]) == pytest.approx(hard, rel=1e-5)
    assert float(losses["loss"]) == pytest.approx(0.3 * hard + 0.7 * soft, rel=1e-5)


def test_distiller_train_step_reports_the_numpy_loss_with_hidden_states():
    teacher = tiny_classifier(7, num_layers=2)
    student = compression.student_from_teacher(teacher, every=2)
    for layer in student.layers:  # move the student away from the teacher
        layer.set_weights([w + np.float32(0.05) for w in layer.get_weights()])
    distiller = compression.Distiller(teacher, student, temperature=2.0, alpha=0.4, hidden_layers=[(0, 0)], hidden_weight=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), run_eagerly=True)
    inputs, labels = batch(8, masked_tail=3)
    history = distiller.fit(inputs, labels, batch_size=8, epochs=1, verbose=0).history
    # NumPy from the models' own outputs (the step before any update: lr = 0)
    t_logits, s_logits = teacher(inputs).numpy(), student(inputs).numpy()
    t_hidden = keras.Model(teacher.inputs, teacher.get_layer("encoder_layer_0").output)(inputs).numpy()
    s_hidden = keras.Model(student.inputs, student.get_layer("encoder_layer_0").output)(inputs).numpy()
    w, b = distiller.projections[0].get_weights()
    mask = inputs["attention_mask"].astype(np.float32)
    hidden = (((s_hidden @ w + b - t_hidden) ** 2).mean(-1) * mask).sum() / mask.sum()
    expected = 0.4 * np_hard(s_logits, labels, "token") + 0.6 * np_soft(s_logits, t_logits, 2.0, mask) + 0.5 * hidden
    assert history["loss"][0] == pytest.approx(expected, rel=1e-4)
    assert history["hidden_loss"][0] == pytest.approx(hidden, rel=1e-4)


def test_hidden_pairs_map_each_student_block_to_the_end_of_its_group_or_its_source():
    assert compression.hidden_pairs(6, [0, 3]) == [(0, 2), (1, 5)]
    assert compression.hidden_pairs(6, [2, 5]) == [(0, 2), (1, 5)]
    assert compression.hidden_pairs(12, [3, 7, 11]) == [(0, 3), (1, 7), (2, 11)]
    assert compression.hidden_pairs(5, [0, 3]) == [(0, 2), (1, 4)]
    assert compression.hidden_pairs(6, [0, 3], "source") == [(0, 0), (1, 3)]
    with pytest.raises(ValueError, match="--hidden-map 'middle'"):
        compression.hidden_pairs(6, [0, 3], "middle")


def test_hidden_projection_starts_as_the_identity_at_equal_widths():
    teacher = tiny_classifier(7, num_layers=2)
    student = compression.student_from_teacher(teacher, every=2)
    distiller = compression.Distiller(teacher, student, alpha=0.5, hidden_layers=[(0, 1)])
    inputs, labels = batch(4)

    def losses(d):  # builds the projections on first use
        return d.compute_losses(inputs, labels, d._student_features(inputs), d._teacher_features(inputs))

    losses(distiller)
    w, b = distiller.projections[0].get_weights()
    np.testing.assert_array_equal(w, np.eye(HIDDEN, dtype=np.float32))
    np.testing.assert_array_equal(b, np.zeros(HIDDEN, np.float32))
    # a student that is the teacher's block 1 reproduces its output exactly: the hidden term starts at zero
    same = compression.student_from_teacher(teacher, layers=[0, 1])
    exact = compression.Distiller(teacher, same, alpha=0.5, hidden_layers=[(1, 1)])
    assert float(losses(exact)["hidden_loss"]) < 1e-10


def test_student_from_teacher_takes_every_kth_block():
    teacher = tiny_classifier(9, num_layers=4)
    student = compression.student_from_teacher(teacher, every=2)
    assert student.kerasllm_config.num_layers == 2 and list(student.teacher_blocks) == [1, 3]
    for s, t in ((0, 1), (1, 3)):
        for a, b in zip(student.get_layer(f"encoder_layer_{s}").get_weights(), teacher.get_layer(f"encoder_layer_{t}").get_weights()):
            np.testing.assert_array_equal(a, b)
    for name in ("embeddings", "classifier"):
        for a, b in zip(student.get_layer(name).get_weights(), teacher.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="every must be an integer"):
        compression.student_from_teacher(teacher, every=5)
    preset_student = compression.student_from_preset(teacher, "bert-tiny")
    assert preset_student.kerasllm_config.vocab_size == VOCAB and preset_student.output_shape[-1] == LABELS


def test_teacher_and_student_with_different_label_sets_are_refused():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    teacher = tiny_classifier(labels=labels)
    other = tiny_classifier(labels=["O", "B-PER", "I-PER", "B-ORG", "I-ORG"])
    with pytest.raises(ValueError, match="label sets differ.*B-LOC"):
        compression.Distiller(teacher, other)
    with pytest.raises(ValueError, match="teacher predicts 5 classes but the student 3"):
        compression.Distiller(teacher, token_classifier(tiny_config(), 3))
    with pytest.raises(ValueError, match="alpha"):
        compression.Distiller(teacher, tiny_classifier(labels=labels), alpha=1.5)


def test_replacement_groups_split_the_teacher_into_consecutive_runs():
    assert compression.replacement_groups(6, 2) == [[0, 1, 2], [3, 4, 5]]
    assert compression.replacement_groups(6, 3) == [[0, 1], [2, 3], [4, 5]]
    assert compression.replacement_groups(7, 3) == [[0, 1, 2], [3, 4], [5, 6]]
    with pytest.raises(ValueError, match="cannot stand in"):
        compression.replacement_groups(2, 3)


def _perturbed_student(teacher, every=2):
    student = compression.student_from_teacher(teacher, every=every)
    for layer in student.layers:  # move the student away from the teacher
        layer.set_weights([w + np.float32(0.05) for w in layer.get_weights()])
    return student


def compose(student, blocks, inputs):
    """By hand: the student's embeddings, then ``blocks`` in order, then the student's classifier."""
    x = student.get_layer("embeddings")(inputs["input_ids"], token_type_ids=inputs["token_type_ids"])
    for block in blocks:
        x = block(x, attention_mask=inputs["attention_mask"])
    return student.get_layer("classifier")(x).numpy()


def test_module_replacer_runs_each_group_by_the_teacher_or_the_student():
    teacher = tiny_classifier(3, num_layers=4)
    student = _perturbed_student(teacher)
    replacer = compression.ModuleReplacer(teacher, student, ramp_steps=10)
    assert replacer.groups == [[0, 1], [2, 3]]
    inputs, _ = batch(3, masked_tail=2)

    def forward(first, second):
        return compose(student, first + second, inputs)

    t = [teacher.get_layer(f"encoder_layer_{i}") for i in range(4)]
    s = [student.get_layer(f"encoder_layer_{i}") for i in range(2)]
    cases = {
        (False, False): forward(t[:2], t[2:]),
        (True, True): forward(s[:1], s[1:]),
        (True, False): forward([s[0]], t[2:]),
        (False, True): forward(t[:2], [s[1]]),
    }
    np.testing.assert_allclose(cases[(True, True)], student(inputs).numpy(), atol=1e-5)
    for use_student, expected in cases.items():
        got = replacer.mixed_forward(inputs, tf.constant(use_student), training=False).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=str(use_student))
    # the four cases differ, so the comparison above can tell the paths apart
    values = list(cases.values())
    assert min(np.abs(a - b).max() for i, a in enumerate(values) for b in values[i + 1:]) > 1e-3
    # a student copied from the teacher, run by the teacher's blocks throughout, is the teacher
    copy = compression.ModuleReplacer(teacher, compression.student_from_teacher(teacher, every=2), ramp_steps=10)
    np.testing.assert_allclose(copy.mixed_forward(inputs, tf.constant([False, False]), training=False).numpy(),
                               teacher(inputs).numpy(), atol=1e-5)


def test_module_replacer_rate_schedule():
    teacher = tiny_classifier(4, num_layers=4)
    replacer = compression.ModuleReplacer(teacher, _perturbed_student(teacher), start_rate=0.3, ramp_steps=10)
    rates = [float(replacer.rate(step)) for step in (0, 5, 10, 50)]
    assert rates == pytest.approx([0.3, 0.65, 1.0, 1.0])
    with pytest.raises(ValueError, match="start_rate"):
        compression.ModuleReplacer(teacher, _perturbed_student(teacher), start_rate=1.5)
    with pytest.raises(ValueError, match="ramp_steps"):
        compression.ModuleReplacer(teacher, _perturbed_student(teacher), ramp_steps=0)


@pytest.mark.parametrize("start_rate", [0.0, 1.0])
def test_module_replacer_loss_is_the_numpy_cross_entropy_of_the_path_taken(start_rate):
    teacher = tiny_classifier(5, num_layers=4)
    student = _perturbed_student(teacher)
    head = student.get_layer("classifier")  # large logits, so the two paths' losses differ clearly
    head.set_weights([w * np.float32(30.0) for w in head.get_weights()])
    # rate 0 at step 0 (the ramp is long): the teacher's blocks run every group; rate 1: the student's.
    replacer = compression.ModuleReplacer(teacher, student, start_rate=start_rate, ramp_steps=10**6, seed=0)
    replacer.compile(optimizer=keras.optimizers.SGD(0.0), run_eagerly=True)
    inputs, labels = batch(5, masked_tail=3)
    history = replacer.fit(inputs, labels, batch_size=8, epochs=1, verbose=0).history
    teacher_blocks = [teacher.get_layer(f"encoder_layer_{i}") for i in range(4)]
    logits = student(inputs).numpy() if start_rate == 1.0 else compose(student, teacher_blocks, inputs)
    other = compose(student, teacher_blocks, inputs) if start_rate == 1.0 else student(inputs).numpy()
    expected, wrong = np_hard(logits, labels, "token"), np_hard(other, labels, "token")
    assert abs(expected - wrong) > 1e-2 * expected  # the two paths give different losses
    assert history["loss"][0] == pytest.approx(expected, rel=1e-5)
    assert history["replace_rate"][0] == pytest.approx(start_rate)


def test_module_replacer_with_alpha_adds_the_numpy_kl_to_the_teacher():
    teacher = tiny_classifier(8, num_layers=4)
    student = _perturbed_student(teacher)
    head = student.get_layer("classifier")  # logits far enough from the teacher's for a clear KL
    head.set_weights([w * np.float32(30.0) for w in head.get_weights()])
    replacer = compression.ModuleReplacer(teacher, student, start_rate=1.0, ramp_steps=10, alpha=0.4, temperature=2.0)
    replacer.compile(optimizer=keras.optimizers.SGD(0.0), run_eagerly=True)
    inputs, labels = batch(8, masked_tail=3)
    history = replacer.fit(inputs, labels, batch_size=8, epochs=1, verbose=0).history
    s_logits, t_logits = student(inputs).numpy(), teacher(inputs).numpy()
    weights = (labels != -100).astype(np.float32)
    soft = np_soft(s_logits, t_logits, 2.0, weights)
    assert soft > 1e-2
    assert history["soft_loss"][0] == pytest.approx(soft, rel=1e-4)
    assert history["loss"][0] == pytest.approx(0.4 * np_hard(s_logits, labels, "token") + 0.6 * soft, rel=1e-4)
    with pytest.raises(ValueError, match="alpha"):
        compression.ModuleReplacer(teacher, student, alpha=1.5)


def test_module_replacer_trains_only_the_student_blocks():
    teacher = tiny_classifier(6, num_layers=4)
    student = _perturbed_student(teacher)
    before_t = [w.copy() for w in teacher.get_weights()]
    fixed = {name: [w.copy() for w in student.get_layer(name).get_weights()] for name in ("embeddings", "classifier")}
    blocks = {i: [w.copy() for w in student.get_layer(f"encoder_layer_{i}").get_weights()] for i in range(2)}
    replacer = compression.ModuleReplacer(teacher, student, start_rate=1.0, ramp_steps=1, seed=0)
    replacer.compile(optimizer=keras.optimizers.SGD(0.1))
    inputs, labels = batch(6)
    replacer.fit(inputs, labels, batch_size=4, epochs=2, verbose=0)
    for a, b in zip(before_t, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    for name, weights in fixed.items():
        for a, b in zip(weights, student.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    for i, weights in blocks.items():
        moved = [np.abs(a - b).max() for a, b in zip(weights, student.get_layer(f"encoder_layer_{i}").get_weights())]
        assert max(moved) > 1e-4, f"student block {i} did not train"
    # the layers stay trainable for the fine-tune that follows
    assert all(layer.trainable for layer in student.layers)


def test_module_replacer_refuses_a_wider_student_and_other_labels():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    teacher = tiny_classifier(labels=labels, num_layers=4)
    with pytest.raises(ValueError, match="label sets differ"):
        compression.ModuleReplacer(teacher, tiny_classifier(labels=["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]))
    wide = token_classifier(tiny_config(hidden_size=2 * HIDDEN, num_layers=2), LABELS)
    wide.kerasllm_task = {**wide.kerasllm_task, "labels": labels}
    with pytest.raises(ValueError, match="width"):
        compression.ModuleReplacer(teacher, wide)


# ----------------------------------------------------------------------------- low-rank


def test_svd_factors_are_the_best_rank_r_approximation():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(12, 20))
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    for rank in (1, 5, 12):
        down, up, energy = compression.svd_factors(w, rank)
        assert down.shape == (12, rank) and up.shape == (rank, 20)
        np.testing.assert_allclose(down @ up, (u[:, :rank] * s[:rank]) @ vt[:rank], atol=1e-5)
        assert energy == pytest.approx((s[:rank] ** 2).sum() / (s**2).sum())
    assert compression.choose_rank(w, param_fraction=0.5) == 3  # floor(0.5 * 240 / 32)
    assert compression.choose_rank(w, energy=1.0) == 12
    assert compression.choose_rank(np.diag([4.0, 2.0, 1.0]), energy=0.95) == 2  # 16/21 < 0.95 <= 20/21


def test_low_rank_at_full_rank_reproduces_the_model(tmp_path):
    model = tiny_classifier(11)
    inputs, _ = batch(11)
    full, report = compression.factorize_model(model, rank=HIDDEN)
    assert [r["rank"] for r in report] == [HIDDEN] * 4
    assert isinstance(full.get_layer("encoder_layer_0").ffn.intermediate, compression.LowRankDense)
    np.testing.assert_allclose(full(inputs).numpy(), model(inputs).numpy(), atol=1e-4)
    # save and load: the factorised structure comes back from kerasllm.json
    from kerasllm.models import save_pretrained

    save_pretrained(full, tmp_path / "lowrank")
    loaded = compression.load_model(tmp_path / "lowrank")
    np.testing.assert_allclose(loaded(inputs).numpy(), full(inputs).numpy(), atol=1e-6)


def test_low_rank_halves_the_feed_forward_parameters():
    model = tiny_classifier(12)
    small, report = compression.factorize_model(model, param_fraction=0.5)
    rank = int(0.5 * HIDDEN * FFN / (HIDDEN + FFN))
    assert [r["rank"] for r in report] == [rank] * 4
    saved = 4 * (HIDDEN * FFN - rank * (HIDDEN + FFN))
    assert compression.parameter_counts(model)[0] - compression.parameter_counts(small)[0] == saved
    with pytest.raises(ValueError, match="exactly one"):
        compression.factorize_model(model, rank=2, energy=0.9)


def test_best_dev_weights_keeps_the_average_of_the_last_epochs_when_it_scores_best():
    """Epoch weights 0, 1, 2, 3; a dev score peaking at w = 2.5: the mean of the last two (2.5) is kept."""
    import tf_keras as keras

    from kerasllm.compression.pipeline import BestDevWeights

    model = keras.Sequential([keras.layers.Dense(1, input_shape=(1,))])

    class Dev:  # a score read off the model's own weight, so the averaged weights are what is scored
        def f1(self, model, split):
            return 1.0 - abs(float(model.get_weights()[0][0, 0]) - 2.5) / 10

    best = BestDevWeights(model, Dev(), log=lambda m: None, average_last=2)
    for epoch in range(4):
        model.set_weights([np.full((1, 1), epoch, "float32"), np.zeros(1, "float32")])
        best.callback().on_epoch_end(epoch)
    assert best.best_epoch == ("fit", 3) and best.best_f1 == pytest.approx(0.95)
    assert best.score_average() == pytest.approx(1.0)
    assert float(model.get_weights()[0][0, 0]) == 3.0  # scoring the average leaves the last epoch in place
    assert best.restore() == ("fit", "average of the last 2 epochs")
    assert float(model.get_weights()[0][0, 0]) == 2.5
    assert [h["epoch"] for h in best.history] == [1, 2, 3, 4, "average of the last 2 epochs"]
    # an average that scores worse than the best single epoch is not kept
    worse = BestDevWeights(model, Dev(), log=lambda m: None, average_last=3)
    for epoch, weight in enumerate([2.5, 0.0, 1.0]):
        model.set_weights([np.full((1, 1), weight, "float32"), np.zeros(1, "float32")])
        worse.callback().on_epoch_end(epoch)
    assert worse.score_average() == pytest.approx(1.0 - abs(3.5 / 3 - 2.5) / 10)
    assert worse.restore() == ("fit", 1) and float(model.get_weights()[0][0, 0]) == 2.5


@pytest.mark.parametrize("name", ["pruning", "qat", "lowrank", "distillation", "pipeline"])
def test_docstring_examples(name):
    import doctest
    import importlib

    module = importlib.import_module(f"kerasllm.compression.{name}")
    result = doctest.testmod(module, extraglobs=vars(module).copy(), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
