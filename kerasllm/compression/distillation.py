"""Knowledge distillation: a student learns from a teacher's logits (and hidden states).

The loss of :class:`Distiller` (Hinton et al., 2015; TinyBERT's hidden-state term,
Jiao et al., 2020)::

    loss = alpha * hard + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))
           + hidden_weight * mean_i MSE(W_i h_student_i, h_teacher_i)

``hard`` is the cross-entropy of the student's logits ``s`` with the labels
(tokens labelled ``ignore_index`` skipped), ``t`` the teacher's logits, ``T`` the
temperature (the ``T^2`` keeps the soft gradients' scale independent of ``T``),
and ``W_i`` a learned projection from the student's width to the teacher's for
each chosen pair of layers. For token classification and language models the
KL term averages over the labelled tokens (real, ``attention_mask == 1``, and not
``ignore_index``: the positions the task is scored on) and the MSE term over every
real token; for sequence classification both average over examples.
"""
import re

import numpy as np
import tensorflow as tf
import tf_keras as keras

TASK_KINDS = {
    "token_classification": "token",
    "sequence_classification": "sequence",
    "causal_lm": "token",
    "token": "token",
    "sequence": "sequence",
    "lm": "token",
}
_BLOCK = re.compile(r"^(encoder|decoder)_layer_(\d+)$")


def _kind(task):
    if task not in TASK_KINDS:
        raise ValueError(f"task={task!r}; distillation supports {', '.join(sorted(TASK_KINDS))}")
    return TASK_KINDS[task]


def _position_weights(logits, attention_mask, kind):
    """Per-position weights: the attention mask for token tasks, ones per example otherwise."""
    if kind == "sequence" or attention_mask is None:
        return tf.ones(tf.shape(logits)[:-1], tf.float32)
    return tf.cast(attention_mask, tf.float32)


def kl_weights(logits, attention_mask, labels, kind, ignore_index=-100):
    """Where the KL term counts: real labelled tokens (token tasks), every example (sequence tasks)."""
    weights = _position_weights(logits, attention_mask, kind)
    if kind == "token" and labels is not None:
        # The logits are matched where the task is scored: a fine-tuned teacher's logits
        # at unlabelled positions ([CLS], [SEP], a word's later sub-words) were never
        # trained, and copying them taught the student noise (bench/README.md).
        weights = weights * tf.cast(tf.not_equal(tf.cast(labels, tf.int32), ignore_index), tf.float32)
    return weights


def soft_loss(student_logits, teacher_logits, temperature, weights):
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` averaged with ``weights`` over positions."""
    t = tf.cast(teacher_logits, tf.float32) / temperature
    s = tf.cast(student_logits, tf.float32) / temperature
    log_p_teacher = tf.nn.log_softmax(t, axis=-1)
    kl = tf.reduce_sum(tf.exp(log_p_teacher) * (log_p_teacher - tf.nn.log_softmax(s, axis=-1)), axis=-1)
    return temperature**2 * tf.math.divide_no_nan(tf.reduce_sum(kl * weights), tf.reduce_sum(weights))


def hard_loss(labels, student_logits, kind, ignore_index=-100):
    """Cross-entropy with the labels: masked mean over tokens (token tasks) or mean over examples."""
    if kind == "token":
        from kerasllm.training.losses import MaskedSparseCategoricalCrossentropy

        return MaskedSparseCategoricalCrossentropy(ignore_index=ignore_index)(labels, student_logits)
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    return tf.reduce_mean(
        keras.backend.sparse_categorical_crossentropy(labels, tf.cast(student_logits, tf.float32), from_logits=True)
    )


def hidden_loss(projected, teacher_hidden, weights):
    """Mean squared error over hidden units, averaged with ``weights`` over positions."""
    per_position = tf.reduce_mean(tf.square(tf.cast(projected, tf.float32) - tf.cast(teacher_hidden, tf.float32)), -1)
    return tf.math.divide_no_nan(tf.reduce_sum(per_position * weights), tf.reduce_sum(weights))


def model_labels(model):
    """The label names stored with a kerasllm model (``kerasllm_task["labels"]``), or None."""
    return (getattr(model, "kerasllm_task", None) or {}).get("labels")


def check_label_sets(teacher, student, teacher_labels=None, student_labels=None):
    """Raise a ValueError unless teacher and student predict the same classes in the same order."""
    t_width, s_width = int(teacher.output_shape[-1]), int(student.output_shape[-1])
    teacher_labels = teacher_labels if teacher_labels is not None else model_labels(teacher)
    student_labels = student_labels if student_labels is not None else model_labels(student)
    if teacher_labels is not None and student_labels is not None and list(teacher_labels) != list(student_labels):
        only_t = sorted(set(teacher_labels) - set(student_labels))
        only_s = sorted(set(student_labels) - set(teacher_labels))
        detail = f"only the teacher has {only_t}, only the student has {only_s}" if (only_t or only_s) else "same labels in a different order"
        raise ValueError(
            f"teacher and student label sets differ ({detail}); distil into a student built for the teacher's labels"
        )
    if t_width != s_width:
        raise ValueError(
            f"the teacher predicts {t_width} classes but the student {s_width}; they must share one label set"
        )


def _layer_name(model, layer):
    """A layer name from an int (block index) or a name; checked against the model."""
    if isinstance(layer, (int, np.integer)):
        names = [m.group(0) for m in (_BLOCK.match(l.name) for l in model.layers) if m and int(m.group(2)) == int(layer)]
        if not names:
            raise ValueError(f"model {model.name!r} has no block number {layer}")
        return names[0]
    try:
        model.get_layer(layer)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no layer {layer!r}") from None
    return layer


@keras.saving.register_keras_serializable(package="kerasllm")
class Distiller(keras.Model):
    """Trains ``student`` to match ``teacher`` (see the module docstring for the loss).

    ``fit`` takes the student's ``(inputs, labels)`` batches, or ``(inputs, labels,
    teacher_logits)`` with the teacher's logits computed beforehand (used instead of
    a teacher pass per step when no hidden states are matched); ``call`` runs the
    student, so ``predict``/``evaluate`` score it. Save ``distiller.student``.

    Args:
        teacher: trained model with the same inputs and label set (frozen here);
            ``None`` only with ``alpha=1`` (plain fine-tuning of the student).
        student: model to train.
        task: ``"token_classification"``, ``"sequence_classification"`` or
            ``"causal_lm"`` (also ``"token"``, ``"sequence"``, ``"lm"``); default: the
            student's ``kerasllm_task``.
        temperature: softening temperature ``T`` (> 0).
        alpha: weight of the hard-label loss, in [0, 1]; the KL term gets ``1 - alpha``.
        hidden_layers: pairs ``(student layer, teacher layer)`` (block indices or
            layer names) whose outputs are matched by MSE through a learned
            projection (initialised to the identity when the widths agree).
        hidden_weight: weight of the hidden-state term.
        ignore_index: label value skipped by the hard loss.
        teacher_labels, student_labels: label names (default: the models'
            ``kerasllm_task["labels"]``); they must agree.

    Example:

    >>> from kerasllm.models import get_preset, token_classifier
    >>> teacher = token_classifier(get_preset("bert-tiny", vocab_size=100), num_labels=3)
    >>> student = student_from_teacher(teacher, every=2)
    >>> distiller = Distiller(teacher, student, temperature=2.0, alpha=0.5, hidden_layers=[(0, 1)])
    >>> distiller.compile(optimizer="adam")
    >>> distiller.student.kerasllm_config.num_layers
    1
    """

    def __init__(
        self,
        teacher,
        student,
        task=None,
        temperature=2.0,
        alpha=0.5,
        hidden_layers=None,
        hidden_weight=1.0,
        ignore_index=-100,
        teacher_labels=None,
        student_labels=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        task = task or (getattr(student, "kerasllm_task", None) or {}).get("task")
        self.kind = _kind(task)
        self.task = task
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha (weight of the hard-label loss) must be in [0, 1], got {alpha}")
        hidden_layers = list(hidden_layers or [])
        if teacher is None and (alpha < 1.0 or hidden_layers):
            raise ValueError("without a teacher only alpha=1 (hard labels) and no hidden_layers make sense")
        if teacher is not None:
            check_label_sets(teacher, student, teacher_labels, student_labels)
            teacher.trainable = False
        self.teacher, self.student = teacher, student
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.hidden_weight, self.ignore_index = float(hidden_weight), int(ignore_index)
        pairs = [(_layer_name(student, s), _layer_name(teacher, t)) for s, t in hidden_layers]
        self.hidden_pairs = pairs
        self._student_features = self._features(student, [s for s, _ in pairs])
        self._teacher_features = self._features(teacher, [t for _, t in pairs]) if teacher is not None else None
        self.projections = [self._projection(student, teacher, s, t, i) for i, (s, t) in enumerate(pairs)]
        self._trackers = {
            name: keras.metrics.Mean(name=name) for name in ("loss", "hard_loss", "soft_loss", "hidden_loss")
        }

    @staticmethod
    def _projection(student, teacher, student_layer, teacher_layer, index):
        """The learned map of one student layer's output onto the teacher's width (starts as the identity when equal)."""
        width = int(teacher.get_layer(teacher_layer).output.shape[-1])
        same = int(student.get_layer(student_layer).output.shape[-1]) == width
        return keras.layers.Dense(width, kernel_initializer="identity" if same else "glorot_uniform",
                                  name=f"hidden_projection_{index}")

    @staticmethod
    def _features(model, names):
        if not names:
            return model
        outputs = [model.get_layer(name).output for name in names] + [model.output]
        return keras.Model(model.inputs, outputs, name=f"{model.name}_features")

    @property
    def metrics(self):
        return list(self._trackers.values())

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def _split(self, outputs):
        if not self.hidden_pairs:
            return [], outputs
        return list(outputs[:-1]), outputs[-1]

    def compute_losses(self, inputs, labels, student_outputs, teacher_outputs=None):
        """The loss terms for one batch: ``{"loss", "hard_loss", "soft_loss", "hidden_loss"}``."""
        s_hidden, s_logits = self._split(student_outputs)
        mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
        weights = kl_weights(s_logits, mask, labels, self.kind, self.ignore_index)
        zero = tf.constant(0.0)
        hard = hard_loss(labels, s_logits, self.kind, self.ignore_index) if self.alpha > 0 else zero
        soft = hidden = zero
        if teacher_outputs is not None:
            t_hidden, t_logits = self._split(teacher_outputs)
            if self.alpha < 1:
                soft = soft_loss(s_logits, t_logits, self.temperature, weights)
            if self.hidden_pairs:
                hidden_weights = _position_weights(s_hidden[0][..., :1], mask, "token")
                terms = [hidden_loss(p(h), th, hidden_weights) for p, h, th in zip(self.projections, s_hidden, t_hidden)]
                hidden = tf.add_n(terms) / len(terms)
        total = self.alpha * hard + (1.0 - self.alpha) * soft + self.hidden_weight * hidden
        return {"loss": total, "hard_loss": hard, "soft_loss": soft, "hidden_loss": hidden}

    def _step(self, data, training):
        inputs, labels = data[0], data[1]
        teacher_outputs = None
        if len(data) > 2 and data[2] is not None and not self.hidden_pairs:
            teacher_outputs = data[2]  # the teacher's logits, computed beforehand
        elif self._teacher_features is not None:
            teacher_outputs = self._teacher_features(inputs, training=False)
        with tf.GradientTape() as tape:
            student_outputs = self._student_features(inputs, training=training)
            losses = self.compute_losses(inputs, labels, student_outputs, teacher_outputs)
            # Replicas' gradients are summed: terms averaged over this replica's batch are
            # divided by the replica count; the token hard loss is already divided by the
            # global token count (kerasllm's masked loss).
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            local = losses["loss"] - self.alpha * losses["hard_loss"]
            hard_scale = 1.0 if self.kind == "token" else 1.0 / replicas
            scaled = self.alpha * losses["hard_loss"] * hard_scale + local / replicas
        if training:
            variables = self.student.trainable_variables + [v for p in self.projections for v in p.trainable_variables]
            self.optimizer.minimize(scaled, variables, tape=tape)
        for name, value in losses.items():
            self._trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    def train_step(self, data):
        return self._step(data, training=True)

    def test_step(self, data):
        return self._step(data, training=False)

    def get_config(self):
        return {
            "task": self.task,
            "temperature": self.temperature,
            "alpha": self.alpha,
            "hidden_weight": self.hidden_weight,
            "ignore_index": self.ignore_index,
        }


def _blocks(model):
    """``{index: layer}`` of the model's ``encoder_layer_i`` / ``decoder_layer_i`` blocks."""
    found = {}
    for layer in model.layers:
        match = _BLOCK.match(layer.name)
        if match:
            found[int(match.group(2))] = layer
    return found


def _task_info(model):
    info = dict(getattr(model, "kerasllm_task", None) or {})
    if "task" not in info or getattr(model, "kerasllm_config", None) is None:
        raise ValueError(f"model {model.name!r} was not built by kerasllm.models (no kerasllm_config/kerasllm_task)")
    info.pop("lowrank", None)
    return info


def student_from_teacher(teacher, every=None, layers=None):
    """A shallower copy of ``teacher``: its blocks ``every-1, 2*every-1, ...`` (or the given ``layers``).

    Embeddings, heads and the chosen blocks are copied from the teacher, so the
    student starts from the teacher's knowledge (DistilBERT's initialisation).
    ``every=3`` on a 6-layer teacher keeps its 3rd and 6th blocks. The student's
    ``teacher_blocks`` attribute lists the teacher block of each student block.

    Example:

    >>> from kerasllm.models import get_preset, token_classifier
    >>> teacher = token_classifier(get_preset("bert-tiny", vocab_size=100, num_layers=4), num_labels=3)
    >>> student_from_teacher(teacher, every=2).kerasllm_config.num_layers
    2
    """
    import dataclasses

    from kerasllm.models import build_model

    info = _task_info(teacher)
    blocks = _blocks(teacher)
    n = len(blocks)
    if (every is None) == (layers is None):
        raise ValueError("give exactly one of every (take every k-th teacher block) or layers (block indices)")
    if every is not None:
        if not isinstance(every, int) or not 1 <= every <= n:
            raise ValueError(f"every must be an integer in [1, {n}] (the teacher has {n} blocks), got {every!r}")
        layers = list(range(every - 1, n, every))
    layers = [int(i) for i in layers]
    bad = [i for i in layers if i not in blocks]
    if not layers or bad:
        raise ValueError(f"layers {bad or layers} are not blocks of the teacher (it has blocks 0..{n - 1})")
    config = dataclasses.replace(teacher.kerasllm_config, num_layers=len(layers))
    task = info.pop("task")
    student = build_model(config, task, **info)
    for layer in student.layers:
        if not layer.weights:
            continue
        match = _BLOCK.match(layer.name)
        source = blocks[layers[int(match.group(2))]] if match else teacher.get_layer(layer.name)
        layer.set_weights(source.get_weights())
    student.teacher_blocks = tuple(layers)  # which teacher block each student block came from
    return _tag(student, config, dict(teacher.kerasllm_task))


def student_from_preset(teacher, preset, **overrides):
    """A fresh model of preset ``preset`` for the teacher's task, vocabulary and labels (random weights)."""
    from kerasllm.models import build_model, get_preset

    info = _task_info(teacher)
    base = teacher.kerasllm_config
    config = get_preset(
        preset,
        vocab_size=base.vocab_size,
        max_position=base.max_position,
        type_vocab_size=base.type_vocab_size,
        **overrides,
    )
    if config.model_type != base.model_type:
        raise ValueError(f"preset {preset!r} is a {config.model_type} model but the teacher is {base.model_type}")
    task = info.pop("task")
    student = build_model(config, task, **info)
    return _tag(student, config, dict(teacher.kerasllm_task))


def _tag(model, config, task_info):
    model.kerasllm_config = config
    task_info.pop("lowrank", None)
    model.kerasllm_task = task_info
    return model


def replacement_groups(num_teacher_blocks, num_student_blocks):
    """The teacher blocks each student block stands in for: consecutive runs, sizes differing by at most one.

    >>> replacement_groups(6, 2)
    [[0, 1, 2], [3, 4, 5]]
    >>> replacement_groups(5, 2)
    [[0, 1, 2], [3, 4]]
    """
    n, k = int(num_teacher_blocks), int(num_student_blocks)
    if not 1 <= k <= n:
        raise ValueError(f"a student of {k} block(s) cannot stand in for a teacher of {n} block(s) (need 1 <= {k} <= {n})")
    sizes = [n // k + (1 if g < n % k else 0) for g in range(k)]
    starts = np.cumsum([0] + sizes[:-1])
    return [list(range(int(s), int(s) + size)) for s, size in zip(starts, sizes)]


HIDDEN_MAPS = ("group-end", "source")


def hidden_pairs(num_teacher_blocks, student_sources, mapping="group-end"):
    """``(student block, teacher block)`` pairs for the hidden-state term of a student copied from ``student_sources``.

    ``"group-end"``: student block i matches the last teacher block of the i-th of
    :func:`replacement_groups` (TinyBERT's uniform map: the output it stands in
    for); ``"source"``: the teacher block it was copied from.

    >>> hidden_pairs(6, [0, 3])
    [(0, 2), (1, 5)]
    >>> hidden_pairs(6, [0, 3], "source")
    [(0, 0), (1, 3)]
    """
    if mapping not in HIDDEN_MAPS:
        raise ValueError(f"--hidden-map {mapping!r}: choose {' or '.join(HIDDEN_MAPS)}")
    if mapping == "source":
        return list(enumerate(int(b) for b in student_sources))
    groups = replacement_groups(num_teacher_blocks, len(student_sources))
    return [(i, group[-1]) for i, group in enumerate(groups)]


def _block_input(block):
    """The hidden-state input tensor of a block in a functional model (its first positional argument)."""
    nodes = block.inbound_nodes
    if len(nodes) != 1:
        raise ValueError(f"block {block.name!r} is called {len(nodes)} times in its model; expected once")
    return nodes[0].call_args[0]


@keras.saving.register_keras_serializable(package="kerasllm")
class ModuleReplacer(keras.Model):
    """Progressive module replacing (BERT-of-Theseus, Xu et al., 2020): the student's blocks learn in the teacher's place.

    The teacher's blocks are split into as many consecutive groups as the student
    has blocks (:func:`replacement_groups`: 6 teacher blocks, 2 student blocks give
    ``[0, 1, 2]`` and ``[3, 4, 5]``). In each training step every group is run
    either by the teacher's blocks (frozen) or, with probability ``rate``, by its
    student block; the labels' loss then trains the student blocks that ran, in
    the context of the teacher's own surrounding blocks. So each student block
    learns to produce what the next teacher group expects, which copying a
    teacher block into a shallower stack (:func:`student_from_teacher`) does not
    give it. ``rate`` rises linearly from ``start_rate`` at the first step to 1 at
    ``ramp_steps``; from then on every step runs the student alone. The
    embeddings and head are the student's (copies of the teacher's) and are
    frozen unless ``train_stem_and_head``; a knowledge-distillation fine-tune of
    the whole student (:class:`Distiller`) may follow. With ``alpha < 1`` the loss
    is :class:`Distiller`'s without hidden states, ``alpha * hard + (1 - alpha) *
    T^2 * KL`` to the teacher's own logits (one more teacher pass per step, unless
    the batches carry them).

    ``fit`` takes the student's ``(inputs, labels)`` batches, or ``(inputs, labels,
    teacher_logits)`` with the teacher's logits computed beforehand; ``call``,
    ``predict`` and ``evaluate`` run the student alone. Save ``replacer.student``.

    On MiniLM fine-tuned on WNUT-17 (6 blocks, test entity F1 40.82), 6 epochs of
    this into teacher blocks 1 and 4 gave 2-block students of 33.72-35.27 (labels
    only) and 34.49-34.81 (``alpha=0.5``), where logit distillation alone reached
    32.26-33.93 (bench/README.md).

    Args:
        teacher: the trained model (frozen here); same label set as the student.
        student: a kerasllm model with fewer blocks of the same width, usually
            :func:`student_from_teacher` (whose blocks start as teacher blocks).
        start_rate: replacement probability at the first step, in [0, 1].
        ramp_steps: optimizer steps until the rate reaches 1 (> 0).
        alpha: weight of the hard-label loss, in [0, 1]; the KL term gets ``1 - alpha``.
        temperature: softening temperature ``T`` of the KL term (> 0).
        train_stem_and_head: also train the student's embeddings and head.
        seed: seed of the per-step replacement draws (None: nondeterministic).
        ignore_index: label value the loss skips (token tasks).

    Example:

    >>> from kerasllm.models import get_preset, token_classifier
    >>> teacher = token_classifier(get_preset("bert-tiny", vocab_size=100, num_layers=4), num_labels=3)
    >>> replacer = ModuleReplacer(teacher, student_from_teacher(teacher, every=2), ramp_steps=100)
    >>> replacer.groups
    [[0, 1], [2, 3]]
    """

    def __init__(self, teacher, student, start_rate=0.3, ramp_steps=1000, alpha=1.0, temperature=2.0,
                 train_stem_and_head=False, seed=None, ignore_index=-100, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha (weight of the hard-label loss) must be in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= start_rate <= 1.0:
            raise ValueError(f"start_rate must be in [0, 1], got {start_rate}")
        if not ramp_steps > 0:
            raise ValueError(f"ramp_steps must be > 0, got {ramp_steps}")
        check_label_sets(teacher, student)
        self.kind = _kind((getattr(student, "kerasllm_task", None) or {}).get("task"))
        t_blocks, s_blocks = _blocks(teacher), _blocks(student)
        if not s_blocks or not t_blocks:
            raise ValueError("module replacing needs kerasllm models with encoder_layer_i / decoder_layer_i blocks")
        t_width = teacher.kerasllm_config.hidden_size
        s_width = student.kerasllm_config.hidden_size
        if t_width != s_width:
            raise ValueError(f"student blocks of width {s_width} cannot replace teacher blocks of width {t_width}")
        self._groups = tuple(tuple(g) for g in replacement_groups(len(t_blocks), len(s_blocks)))
        teacher.trainable = False
        self.teacher, self.student = teacher, student
        self.teacher_blocks = [t_blocks[i] for i in range(len(t_blocks))]
        self.student_blocks = [s_blocks[i] for i in range(len(s_blocks))]
        # The student without its blocks: embeddings (inputs -> first block's input) and head
        # (last block's output -> logits), sharing the student's layers.
        self.stem = keras.Model(student.inputs, _block_input(self.student_blocks[0]), name="replacer_stem")
        self.head = keras.Model(self.student_blocks[-1].output, student.output, name="replacer_head")
        self.start_rate, self.ramp_steps = float(start_rate), int(ramp_steps)
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.train_stem_and_head, self.ignore_index = bool(train_stem_and_head), int(ignore_index)
        self._draws = (tf.random.Generator.from_seed(seed) if seed is not None
                       else tf.random.Generator.from_non_deterministic_state())
        self._trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "replace_rate")}
        if self.alpha < 1.0:
            self._trackers["soft_loss"] = keras.metrics.Mean(name="soft_loss")

    @property
    def metrics(self):
        return list(self._trackers.values())

    @property
    def groups(self):
        """``groups[g]``: the teacher block indices student block ``g`` stands in for."""
        return [list(g) for g in self._groups]

    def rate(self, step):
        """The replacement probability at optimizer step ``step`` (0-based)."""
        step = tf.cast(step, tf.float32)
        return tf.minimum(1.0, self.start_rate + (1.0 - self.start_rate) * step / float(self.ramp_steps))

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def mixed_forward(self, inputs, use_student, training=None):
        """Logits with group ``g`` run by student block ``g`` where ``use_student[g]`` (a bool tensor), else by the teacher."""
        mask = inputs["attention_mask"]
        x = self.stem(inputs, training=training)
        for g, group in enumerate(self.groups):
            block = self.student_blocks[g]

            def student_path(x=x, block=block):
                return block(x, attention_mask=mask, training=training)

            def teacher_path(x=x, group=group):
                for i in group:
                    x = self.teacher_blocks[i](x, attention_mask=mask, training=False)
                return x

            x = tf.cond(use_student[g], student_path, teacher_path)
        return self.head(x, training=training)

    def train_step(self, data):
        inputs, labels = data[0], data[1]
        rate = self.rate(self.optimizer.iterations)
        use_student = self._draws.uniform([len(self.groups)]) < rate
        # Only the student's blocks learn (plus its embeddings and head when asked); the
        # layers' trainable flags are left as they are for the fine-tune that follows.
        variables = [v for b in self.student_blocks for v in b.trainable_variables]
        if self.train_stem_and_head:
            variables += self.stem.trainable_variables + self.head.trainable_variables
        teacher_logits = None
        if self.alpha < 1.0:
            teacher_logits = data[2] if len(data) > 2 else self.teacher(inputs, training=False)
        with tf.GradientTape() as tape:
            logits = self.mixed_forward(inputs, use_student, training=True)
            loss = hard_loss(labels, logits, self.kind, self.ignore_index)
            if teacher_logits is not None:
                weights = kl_weights(logits, inputs.get("attention_mask"), labels, self.kind, self.ignore_index)
                soft = soft_loss(logits, teacher_logits, self.temperature, weights)
                loss = self.alpha * loss + (1.0 - self.alpha) * soft
        # A step where the teacher ran every group gives the blocks no gradient when run
        # eagerly (one branch of each cond runs); in a graph the cond's gradient is zeros.
        grads = tape.gradient(loss, variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        self.optimizer.apply_gradients(zip(grads, variables))
        self._trackers["loss"].update_state(loss)
        self._trackers["replace_rate"].update_state(rate)
        if teacher_logits is not None:
            self._trackers["soft_loss"].update_state(soft)
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    def test_step(self, data):
        inputs, labels = data[0], data[1]
        loss = hard_loss(labels, self.student(inputs, training=False), self.kind, self.ignore_index)
        self._trackers["loss"].update_state(loss)
        return {"loss": self._trackers["loss"].result()}

    def get_config(self):
        return {"start_rate": self.start_rate, "ramp_steps": self.ramp_steps, "alpha": self.alpha,
                "temperature": self.temperature, "train_stem_and_head": self.train_stem_and_head, "ignore_index": self.ignore_index}
