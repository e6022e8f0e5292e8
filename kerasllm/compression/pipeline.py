"""The ``kerasllm compress`` runs on a fine-tuned NER folder: prune, QAT, PTQ, distill, low-rank.

Each ``run_*`` function loads the model folder (``OUT/model`` of ``kerasllm
finetune ner``: weights, ``vocab.txt``, ``labels.json``) and the CoNLL files,
compresses, fine-tunes where the method needs it, writes ``OUT/model`` (the
compressed Keras model, where there is one) and ``OUT/model.tflite``, scores
test entity F1 of both, times the TFLite model at batch 1, and returns (and
writes) the report row of :mod:`kerasllm.compression.report`.
"""
import dataclasses
import json
import os
import time

import numpy as np

from kerasllm._io import atomic_write_json
from kerasllm.compression.report import write_row


def _log(message):
    print(message, flush=True)


# Which training phases of ``compress distill`` see the --augment copies: the module-replacing
# epochs and the distillation epochs, or only one of them.
AUGMENT_PHASES = ("both", "replace", "distill")


@dataclasses.dataclass
class CompressOptions:
    """What every ``kerasllm compress`` command shares (the CLI options)."""

    model: str
    out: str
    train: str = None
    dev: str = None
    test: str = None
    max_length: int = 128
    batch_size: int = 32
    epochs: int = 2
    lr: float = 5e-5
    seed: int = 0
    name: str = None
    latency_length: int = 64
    latency_threads: int = 1
    calibration_steps: int = 100
    augment: int = 0
    augment_mentions: float = 0.5
    augment_tokens: float = 0.15
    augment_names: str = "train"
    augment_phase: str = "both"

    def validate(self, needs_train=False):
        for option in ("train", "dev", "test"):
            path = getattr(self, option)
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(f"--{option} {path}: no such file")
        for option in ("max_length", "batch_size", "latency_length", "calibration_steps"):
            if getattr(self, option) < 1:
                raise ValueError(f"--{option.replace('_', '-')} must be >= 1, got {getattr(self, option)}")
        if self.epochs < 0:
            raise ValueError(f"--epochs must be >= 0, got {self.epochs}")
        if self.augment < 0:
            raise ValueError(f"--augment must be >= 0 (augmented copies of the training set), got {self.augment}")
        for option in ("augment_mentions", "augment_tokens"):
            if not 0.0 <= getattr(self, option) <= 1.0:
                raise ValueError(f"--{option.replace('_', '-')} must be in [0, 1], got {getattr(self, option)}")
        if self.augment_names not in ("train", "invented"):
            raise ValueError(f"--augment-names must be train or invented, got {self.augment_names!r}")
        if self.augment_phase not in AUGMENT_PHASES:
            raise ValueError(f"--augment-phase must be one of {', '.join(AUGMENT_PHASES)}, got {self.augment_phase!r}")
        if needs_train and self.train is None:
            raise ValueError("this method fine-tunes the model: pass --train (a CoNLL file)")
        if self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if os.path.abspath(self.out) == os.path.abspath(self.model):
            raise ValueError(f"--out {self.out} is the input model folder; write the result somewhere else")


def _read_task(directory):
    path = os.path.join(directory, "kerasllm.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_ner_folder(directory):
    """``(model, tokenizer, label_map)`` of a fine-tuned NER folder, low-rank folders included."""
    from kerasllm.training.ner_finetune import load_ner_folder as load_plain

    directory = os.fspath(directory)
    if not _read_task(directory).get("lowrank"):
        return load_plain(directory)
    from kerasllm.compression.saving import load_model
    from kerasllm.data import LabelMap
    from kerasllm.tokenizers import WordPieceTokenizer

    model = load_model(directory)
    label_map = LabelMap.from_json(os.path.join(directory, "labels.json"))
    if label_map.num_labels != model.output_shape[-1]:
        raise ValueError(f"--model {directory}: labels.json does not match the classifier's outputs")
    return model, WordPieceTokenizer.load(directory), label_map


class NerData:
    """A NER folder's tokenizer and labels with the CoNLL splits encoded into windows."""

    def __init__(self, tokenizer, label_map, options):
        from kerasllm.data import read_conll
        from kerasllm.data.augment import augmented_copies
        from kerasllm.data.ner_dataset import encode_sentences

        self.tokenizer, self.label_map, self.options = tokenizer, label_map, options
        self.splits = {}
        # Windows of the augmented copies of train, and whether ``windows("train")`` includes them.
        self.augmented, self.use_augmented = [], True
        self._teacher_cache = {}
        for split in ("train", "dev", "test"):
            path = getattr(options, split)
            if path is None:
                continue
            sentences = read_conll(path)
            windows = encode_sentences(sentences, tokenizer, label_map, options.max_length, path=path)
            if split == "train" and options.augment:
                # Training windows only: the sentences stay the file's, for scoring.
                extra = augmented_copies(sentences, options.augment, options.augment_mentions,
                                         options.augment_tokens, seed=options.seed, names=options.augment_names)
                self.augmented = encode_sentences(extra, tokenizer, label_map, options.max_length, path=path)
            self.splits[split] = (sentences, windows)

    def windows(self, split):
        if split not in self.splits:
            return None
        windows = self.splits[split][1]
        return windows + self.augmented if split == "train" and self.use_augmented else windows

    def steps_per_epoch(self):
        return int(np.ceil(len(self.windows("train")) / self.options.batch_size))

    def teacher_logits(self, teacher):
        """``teacher``'s logits on every training window (augmented copies included when used), computed once.

        The teacher is frozen and runs in inference mode, so its logits on a window
        never change: each epoch of distillation then costs the student's steps
        alone, not one teacher forward per step as well.
        """
        from kerasllm.data.ner_dataset import window_outputs

        key = (id(teacher), self.use_augmented)
        if key not in self._teacher_cache:
            windows = self.windows("train")
            started = time.time()
            self._teacher_cache[key] = window_outputs(teacher, windows, max(32, self.options.batch_size))
            _log(f"teacher logits on {len(windows)} training windows computed once ({time.time() - started:.0f} s)")
        return self._teacher_cache[key]

    def dataset(self, teacher=None):
        """Training batches (length-bucketed, reshuffled every epoch).

        With ``teacher``: ``(inputs, labels, teacher_logits)`` batches, the logits from
        :meth:`teacher_logits` (what :class:`~kerasllm.compression.distillation.Distiller`
        and ``ModuleReplacer`` take instead of running the teacher every step).
        """
        from kerasllm.data.ner_dataset import make_dataset

        extra = self.teacher_logits(teacher) if teacher is not None else None
        batches = make_dataset(self.windows("train"), self.options.batch_size, shuffle=True, seed=self.options.seed,
                               extra=extra)
        return batches.shuffle(len(batches), seed=self.options.seed, reshuffle_each_iteration=True)

    def f1(self, model, split="test"):
        """Entity F1 on ``split`` of a Keras model or a :class:`TFLiteRunner` (None without that split)."""
        from kerasllm.export import TFLiteRunner
        from kerasllm.training.ner_finetune import evaluate_windows

        if split not in self.splits:
            return None
        if isinstance(model, TFLiteRunner):
            runner = model
            model = lambda inputs, training=False: runner(inputs)["logits"]  # noqa: E731
        sentences, windows = self.splits[split]
        return float(evaluate_windows(model, sentences, windows, self.label_map, self.options.batch_size)["f1"])

    def representative(self):
        """Calibration inputs for int8: training (else test) windows cut to one common length, unpadded.

        The calibrator needs one shape for all rows, and padding them would put the
        attention's masked scores (-1e9) into the calibrated range of the scores,
        leaving no int8 steps for the real ones (every attention becomes uniform).
        So the rows are the windows at least ``L`` sub-words long, cut to their
        first ``L`` (``L``: the median window length), with full attention masks.
        """
        source = self.windows("train") or self.windows("test") or self.windows("dev")
        if not source:
            raise ValueError("int8 calibration needs data: pass --train (or --test)")
        length = int(np.median([len(w.input_ids) for w in source]))
        rows = [w.input_ids[:length] for w in source if len(w.input_ids) >= length]
        rows = rows[: self.options.calibration_steps]
        ids = np.asarray(rows, np.int32)
        return [
            {"input_ids": ids[i : i + 1], "attention_mask": np.ones_like(ids[i : i + 1]), "token_type_ids": np.zeros_like(ids[i : i + 1])}
            for i in range(len(ids))
        ]

    def latency_input(self):
        """One batch-1 input padded to ``latency_length`` (a real window when there is data)."""
        length = self.options.latency_length
        ids = np.zeros((1, length), np.int32)
        mask = np.zeros((1, length), np.int32)
        source = self.windows("test") or self.windows("train") or self.windows("dev")
        tokens = list(source[0].input_ids[:length]) if source else [self.tokenizer.cls_id, self.tokenizer.sep_id]
        ids[0, : len(tokens)] = tokens
        mask[0, : len(tokens)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def load(options, needs_train=False, log=_log):
    """Validate ``options``, seed every generator from ``--seed``; return ``(model, NerData)``.

    The seeding (:func:`kerasllm.training.set_seed`: dropout, initialisers, the data
    order) makes a run with the same ``--seed`` repeat in a new process.
    """
    from kerasllm.training import set_seed

    options.validate(needs_train)
    set_seed(options.seed)
    model, tokenizer, label_map = load_ner_folder(options.model)
    config = model.kerasllm_config
    if options.max_length > config.max_position:
        log(f"note: --max-length {options.max_length} capped at the model's {config.max_position} positions")
        options.max_length = config.max_position
    options.latency_length = min(options.latency_length, config.max_position)
    data = NerData(tokenizer, label_map, options)
    sizes = ", ".join(f"{k} {len(v[0])} sentences" for k, v in data.splits.items()) or "no data"
    if options.augment and data.windows("train") is not None:
        sizes += (f" (+ {options.augment} augmented cop{'y' if options.augment == 1 else 'ies'} of train: mentions "
                  f"swapped ({options.augment_names} names) with p {options.augment_mentions}, tokens with p {options.augment_tokens}; "
                  f"{len(data.windows('train'))} training windows)")
    log(f"model: {options.model} ({model.count_params():,} parameters, {label_map.num_labels} labels); data: {sizes}")
    return model, data


def compile_for_training(model, data, epochs=None, lr=None):
    """Compile ``model`` with kerasllm's AdamW + warm-up and the masked token loss."""
    from kerasllm import training

    options = data.options
    steps = data.steps_per_epoch() * (options.epochs if epochs is None else epochs)
    model.compile(
        optimizer=training.create_optimizer(
            learning_rate=lr or options.lr, num_train_steps=max(steps, 1), warmup_steps=int(0.1 * steps)
        ),
        loss=training.masked_sparse_categorical_crossentropy(),
        metrics=[training.masked_accuracy()],
    )
    return model


def fit(model, data, callbacks=(), epochs=None, log=_log, best=None, teacher=None):
    """Fine-tune a compiled model on the training windows (``epochs`` defaults to ``--epochs``).

    ``best``: a :class:`BestDevWeights` that scores its model on dev after every epoch.
    ``teacher``: the batches carry this model's logits (:meth:`NerData.dataset`).
    """
    epochs = data.options.epochs if epochs is None else epochs
    if epochs == 0:
        return None
    batches = data.dataset(teacher=teacher)
    log(f"fine-tuning {epochs} epoch(s), {data.steps_per_epoch()} steps each")
    callbacks = list(callbacks) + ([best.callback()] if best is not None else [])
    return model.fit(batches, epochs=epochs, callbacks=callbacks, verbose=2)


class BestDevWeights:
    """Keeps the weights of ``model`` from the epoch with the best dev entity F1, over one or more fits.

    After every epoch of each :func:`fit` it is passed to, ``model`` (the student
    inside a distiller, say) is scored on the dev split; :meth:`restore` puts back
    the best epoch's weights (the first of equal scores). ``phase`` names the fit
    in the log and in :attr:`best_epoch`, e.g. ``("replace", 5)``.

    Example:

    >>> import numpy as np, tf_keras as keras
    >>> model = keras.Sequential([keras.layers.Dense(1, input_shape=(1,))])
    >>> class Fake:  # dev scores 0.2, then 0.5, then 0.3
    ...     scores = iter([0.2, 0.5, 0.3])
    ...     def f1(self, model, split): return next(self.scores)
    >>> best = BestDevWeights(model, Fake(), log=lambda m: None)
    >>> for epoch in range(3):
    ...     model.set_weights([np.full((1, 1), epoch, "float32"), np.zeros(1, "float32")])
    ...     best.callback().on_epoch_end(epoch)
    >>> best.restore(), float(model.get_weights()[0][0, 0])
    (('fit', 2), 1.0)
    """

    def __init__(self, model, data, log=_log, average_last=0):
        self.model, self.data, self.log = model, data, log
        self.phase = "fit"
        self.best_f1, self.best_epoch, self._weights = None, None, None
        self.history = []
        # average_last >= 2: also keep the last epochs' weights, for :meth:`score_average`.
        self.average_last, self._recent = average_last, []

    def callback(self):
        import tf_keras as keras

        return keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs=None: self._score(epoch, logs))

    def _score(self, epoch, logs=None, label=None):
        f1 = self.data.f1(self.model, "dev")
        epoch = epoch + 1 if label is None else label
        self.history.append({"phase": self.phase, "epoch": epoch, "dev_f1": f1})
        better = self.best_f1 is None or f1 > self.best_f1
        weights = None
        if better or (self.average_last >= 2 and label is None):
            weights = [np.array(w) for w in self.model.get_weights()]
        if better:
            self.best_f1, self.best_epoch, self._weights = f1, (self.phase, epoch), weights
        if self.average_last >= 2 and label is None:
            self._recent = (self._recent + [(self.phase, weights)])[-self.average_last:]
        if logs is not None:
            logs["val_f1"] = f1
        name = f"epoch {epoch}" if label is None else epoch
        self.log(f"{self.phase} {name}: dev entity F1 {f1 * 100:.2f}" + (" (best so far)" if better else ""))

    def score_average(self):
        """Score the mean of the last ``average_last`` epochs' weights (of the last phase scored) on dev.

        It competes with the single epochs: :meth:`restore` keeps it if its dev F1 is
        the best. Returns its dev F1 (None when fewer than two epochs of that phase were scored).
        """
        if not self._recent:
            return None
        self.phase = self._recent[-1][0]
        recent = [w for phase, w in self._recent if phase == self.phase]
        if len(recent) < 2:
            return None
        current = self.model.get_weights()
        self.model.set_weights([np.mean(ws, axis=0).astype(ws[0].dtype) for ws in zip(*recent)])
        self._score(None, label=f"average of the last {len(recent)} epochs")
        f1 = self.history[-1]["dev_f1"]
        self.model.set_weights(current)
        return f1

    def restore(self):
        """Put the best epoch's weights back into the model; return that epoch (None if none was scored)."""
        if self._weights is None:
            return None
        self.model.set_weights(self._weights)
        phase, epoch = self.best_epoch
        name = f"epoch {epoch}" if isinstance(epoch, int) else epoch
        self.log(f"kept the student of {phase} {name} (dev entity F1 {self.best_f1 * 100:.2f})")
        return self.best_epoch


def with_teacher(student, teacher, distill_alpha=None, temperature=2.0, log=_log):
    """What to fine-tune: ``student`` itself, or a :class:`~kerasllm.compression.distillation.Distiller`
    that also matches ``teacher``'s logits (the uncompressed model).

    ``distill_alpha`` is the weight of the label loss (``None``: no teacher); the
    temperature-scaled KL to the teacher gets ``1 - distill_alpha``: pruning and QAT
    then fine-tune the compressed model towards the model it came from. On
    MiniLM/WNUT-17 it measured within run-to-run noise of labels alone (one run each,
    bench/README.md, "Compression").
    """
    if distill_alpha is None:
        return student
    from kerasllm.compression.distillation import Distiller

    if not 0.0 <= distill_alpha < 1.0:
        raise ValueError(f"--distill-alpha must be in [0, 1) (the label-loss weight), got {distill_alpha}")
    log(f"fine-tuning towards the uncompressed model: KL x T^2 (T={temperature}) weight {1 - distill_alpha:g}, "
        f"labels weight {distill_alpha:g}")
    return Distiller(teacher, student, temperature=temperature, alpha=distill_alpha)


def save_folder(model, data, out_dir):
    """Write the Keras model as a NER folder ``out_dir/model`` (weights, config, vocab.txt, labels.json)."""
    from kerasllm.models import save_pretrained

    folder = os.path.join(out_dir, "model")
    save_pretrained(model, folder)
    data.tokenizer.save(folder)
    data.label_map.to_json(os.path.join(folder, "labels.json"))
    return folder


def measure(
    data,
    out_dir,
    name,
    method,
    export_model,
    quantize="none",
    keras_model=None,
    float_model=None,
    settings=None,
    model_dir=None,
    started=None,
    log=_log,
    float_layer_norm=True,
):
    """Export, score and time one compressed model; write and return its report row.

    Args:
        export_model: the Keras model converted to ``out_dir/model.tflite``.
        quantize: the TFLite quantization (``kerasllm.export.export_tflite``'s modes).
        keras_model: the model whose Keras F1 is reported (default ``export_model``).
        float_model: the plain model whose (non-zero) parameters are counted
            (default ``keras_model``).
        float_layer_norm: int8 only: keep the layer-norm ops in float (``export_tflite``'s option).
    """
    from kerasllm.compression.pruning import gzip_size, parameter_counts
    from kerasllm.export import TFLiteRunner, export_tflite, latency

    options = data.options
    keras_model = keras_model or export_model
    float_model = float_model or keras_model
    params, nonzero = parameter_counts(float_model)
    keras_f1 = data.f1(keras_model)
    path = os.path.join(out_dir, "model.tflite")
    representative = data.representative() if quantize in ("int8", "int16x8") else None
    assets = {"labels.json": data.label_map.labels, "vocab.txt": os.path.join(options.model, "vocab.txt")}
    report = export_tflite(
        export_model,
        path,
        quantize=quantize,
        representative_data=representative,
        num_calibration_steps=options.calibration_steps,
        assets=assets,
        float_layer_norm=float_layer_norm,
    )
    runner = TFLiteRunner(path, num_threads=options.latency_threads)
    tflite_f1 = data.f1(runner)
    timing = latency(runner, data.latency_input(), warmup=5, runs=50)
    row = {
        "name": name,
        "method": method,
        "settings": settings or {},
        "metric": "entity_f1",
        "keras_score": keras_f1,
        "tflite_score": tflite_f1,
        "params": int(params),
        "nonzero_params": int(nonzero),
        "tflite_quantize": quantize,
        "tflite_bytes": report.size_bytes,
        "tflite_gzip_bytes": gzip_size(path),
        "tflite_fallback": report.fallback,
        "tflite_notes": list(report.notes),
        "latency_p50_ms": timing["p50_ms"],
        "latency_p95_ms": timing["p95_ms"],
        "latency_length": options.latency_length,
        "latency_threads": options.latency_threads,
        "model_dir": model_dir,
        "tflite_path": path,
        "seconds": round(time.time() - started, 1) if started else None,
    }
    write_row(out_dir, row)
    _print_row(row, log)
    return row


def _print_row(row, log):
    from kerasllm.compression.report import COLUMNS, table_rows

    cells = table_rows([row])[0]
    keep = [i for i, c in enumerate(COLUMNS) if c not in ("Δ vs base", "gzip × base")]
    log("\nreport row:")
    for i in keep:
        log(f"  {COLUMNS[i]:<16} {cells[i]}")


_FULL_INTEGER = " (full integer)"  # row-name suffix of an int8 file with int8 layer norms too


def _name(options, default):
    return options.name or default


# ---------------------------------------------------------------------------- the methods


def run_ptq(options, quantize="int8", float_layer_norm=True, log=_log):
    """Post-training quantization: ``export_tflite(model, quantize=...)`` of the model as it is.

    ``quantize="none"`` gives the float32 baseline row. ``float_layer_norm``: int8 only,
    see :func:`kerasllm.export.export_tflite`.
    """
    started = time.time()
    model, data = load(options, log=log)
    os.makedirs(options.out, exist_ok=True)
    strict = quantize == "int8" and not float_layer_norm
    name = _name(options, "float32" if quantize == "none" else f"PTQ {quantize}" + _FULL_INTEGER * strict)
    method = "base" if quantize == "none" else "ptq"
    settings = {"quantize": quantize, **({"float_layer_norm": float_layer_norm} if quantize == "int8" else {})}
    return measure(data, options.out, name, method, model, quantize=quantize, settings=settings,
                   model_dir=os.path.abspath(options.model), started=started, log=log,
                   float_layer_norm=float_layer_norm)


def run_prune(
    options,
    sparsity=0.5,
    schedule="polynomial",
    m_by_n=None,
    include_embeddings=False,
    rounds=1,
    frequency=None,
    distill_alpha=None,
    temperature=2.0,
    log=_log,
):
    """Magnitude pruning with fine-tuning (polynomial ramp, constant, or ``rounds`` prune-then-fine-tune steps).

    ``distill_alpha``: fine-tune towards the dense model as well (see :func:`with_teacher`).
    """
    from kerasllm.compression import pruning

    started = time.time()
    if m_by_n is None:
        pruning.check_sparsity(sparsity, "--sparsity")
    if schedule not in pruning.SCHEDULES:
        raise ValueError(f"--schedule {schedule!r}: choose {' or '.join(pruning.SCHEDULES)}")
    if rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {rounds}")
    model, data = load(options, needs_train=True, log=log)
    os.makedirs(options.out, exist_ok=True)
    steps = data.steps_per_epoch() * max(options.epochs, 1)
    frequency = frequency or max(1, min(100, steps // 20))
    common = dict(m_by_n=m_by_n, include_embeddings=include_embeddings, frequency=frequency)
    log_dir = os.path.join(options.out, "logs")

    def train(pruned, round_index=None):
        trainee = with_teacher(pruned, model, distill_alpha, temperature, log)
        compile_for_training(trainee, data)
        fit(trainee, data, pruning.pruning_callbacks(log_dir))

    if rounds > 1:
        sparse = pruning.prune_iteratively(model, train, sparsity, rounds=rounds, **common)
    else:
        end_step = max(1, int(0.75 * steps)) if schedule == "polynomial" else None
        pruned = pruning.prune_model(model, sparsity, schedule=schedule, end_step=end_step, **common)
        train(pruned)
        sparse = pruning.strip_pruning(pruned)
    report = pruning.sparsity_report(sparse, include_embeddings=include_embeddings, include_heads=False)
    atomic_write_json(os.path.join(options.out, "sparsity.json"), report)
    log(pruning.format_sparsity_report(report))
    folder = save_folder(sparse, data, options.out)
    label = "2:4" if m_by_n else f"{sparsity:.0%}"
    settings = {
        "sparsity": report["total"]["sparsity"],
        "target": list(m_by_n) if m_by_n else sparsity,
        "schedule": "m_by_n" if m_by_n else schedule,
        "rounds": rounds,
        "include_embeddings": include_embeddings,
        "epochs": options.epochs,
        "distill_alpha": distill_alpha,
        "temperature": temperature if distill_alpha is not None else None,
    }
    name = _name(options, f"prune {label}" + (" +emb" if include_embeddings else "")
                 + (" +KD" if distill_alpha is not None else ""))
    return measure(data, options.out, name, "prune", sparse, settings=settings, model_dir=folder,
                   started=started, log=log)


def run_qat(options, preserve_sparsity=False, distill_alpha=None, temperature=2.0, float_layer_norm=True, log=_log):
    """Quantization-aware fine-tuning, then int8 TFLite.

    ``distill_alpha``: fine-tune towards the float model as well (see :func:`with_teacher`).
    ``float_layer_norm``: keep the layer-norm ops of the int8 file in float (default), or
    make them int8 too (a full-integer file); see :func:`kerasllm.export.export_tflite`.
    """
    from kerasllm.compression import qat

    started = time.time()
    model, data = load(options, needs_train=True, log=log)
    os.makedirs(options.out, exist_ok=True)
    quantized = qat.quantize_model(model, preserve_sparsity=preserve_sparsity)
    log(f"QAT model: {qat.fake_quant_count(quantized)} fake-quant ops; unquantized projections: "
        f"{qat.unquantized_projections(quantized) or 'none'}")
    trainee = with_teacher(quantized, model, distill_alpha, temperature, log)
    compile_for_training(trainee, data)
    fit(trainee, data)
    plain = qat.float_copy(quantized)
    folder = save_folder(plain, data, options.out)
    settings = {"preserve_sparsity": preserve_sparsity, "epochs": options.epochs, "distill_alpha": distill_alpha,
                "temperature": temperature if distill_alpha is not None else None,
                "float_layer_norm": float_layer_norm}
    name = _name(options, "QAT int8" + (" (sparsity kept)" if preserve_sparsity else "")
                 + (" +KD" if distill_alpha is not None else "") + _FULL_INTEGER * (not float_layer_norm))
    return measure(data, options.out, name, "qat", quantized, quantize="int8", float_model=plain,
                   settings=settings, model_dir=folder, started=started, log=log, float_layer_norm=float_layer_norm)


def run_lowrank(options, param_fraction=None, energy=None, rank=None, log=_log):
    """SVD factorisation of the feed-forward kernels, then a short fine-tune."""
    from kerasllm.compression.lowrank import factorize_model

    started = time.time()
    model, data = load(options, needs_train=options.epochs > 0, log=log)
    os.makedirs(options.out, exist_ok=True)
    if param_fraction is None and energy is None and rank is None:
        param_fraction = 0.5
    small, report = factorize_model(model, energy=energy, param_fraction=param_fraction, rank=rank)
    before = sum(r["params_before"] for r in report)
    after = sum(r["params_after"] for r in report)
    log(f"factorised {len(report)} kernels: ranks {sorted({r['rank'] for r in report})}, "
        f"{before:,} -> {after:,} parameters ({after / max(before, 1):.0%}); "
        f"retained energy {min((r['energy'] for r in report), default=1):.3f}..{max((r['energy'] for r in report), default=1):.3f}")
    atomic_write_json(os.path.join(options.out, "lowrank.json"), report)
    f1_before_tuning = data.f1(small)
    compile_for_training(small, data)
    fit(small, data)
    folder = save_folder(small, data, options.out)
    settings = {
        "param_fraction": param_fraction,
        "energy": energy,
        "rank": rank,
        "ffn_params_before": before,
        "ffn_params_after": after,
        "f1_before_fine_tuning": f1_before_tuning,
        "epochs": options.epochs,
    }
    criterion = f"{param_fraction:.0%} FFN" if param_fraction else (f"energy {energy}" if energy else f"rank {rank}")
    return measure(data, options.out, _name(options, f"low-rank {criterion}"), "lowrank", small,
                   settings=settings, model_dir=folder, started=started, log=log)


def run_distill(
    options,
    every=None,
    layers=None,
    preset=None,
    temperature=2.0,
    alpha=0.5,
    hidden=False,
    hidden_weight=1.0,
    hidden_map="group-end",
    replace_epochs=0,
    replace_start_rate=0.3,
    replace_lr=5e-4,
    replace_alpha=None,
    keep_best=True,
    average_last=0,
    freeze_embeddings=None,
    log=_log,
):
    """Distil the model into a student (every k-th block, chosen blocks, or a preset); ``alpha=1``: no teacher.

    ``replace_epochs > 0`` first trains the student's blocks in the teacher's place
    (:class:`~kerasllm.compression.distillation.ModuleReplacer`, BERT-of-Theseus) for
    that many epochs, the replacement rate rising from ``replace_start_rate`` to 1 over
    their first 80%, at the peak learning rate ``replace_lr`` (``None``: ``options.lr``)
    with the label weight ``replace_alpha`` (``None``: ``alpha``; below 1 adds the KL
    term); the ``--epochs`` of distillation (``alpha``, ``temperature``, ``options.lr``) follow.
    On MiniLM/WNUT-17 (2-block student, 6 epochs, labels only) four runs at 5e-4 averaged
    35.50 test F1 (34.43-37.39, unseeded dropout) against 34.50 for two at 2e-4, hence
    the default; three seeded runs keeping the best dev epoch gave 34.71-35.55
    (bench/README.md, "Compression").

    ``hidden``: also match each student block's output by MSE; ``hidden_map`` picks the
    teacher block: ``"group-end"`` (default; TinyBERT's uniform map: student block i to the
    last teacher block of the i-th of ``replacement_groups``, blocks 3 and 6 of 6 for a
    2-block student) or ``"source"`` (the block the student block was copied from).

    ``freeze_embeddings``: keep the student's embedding tables frozen in the distillation
    epochs (the module replacer never trains them); ``None`` (default): frozen when they
    are the teacher's (``every``/``layers``), trained for a ``preset`` student. The saved
    student's config does not record the freezing. On MiniLM/WNUT-17 (2-block student,
    alpha 0.2, ``--augment 2``) freezing them lifted test F1 from 36.67/35.08 to
    38.65/36.95 (seeds 0/1) and cut an epoch from 163 s to 112 s (bench/README.md).

    ``keep_best`` (with a dev split): score the student on dev after every epoch of
    both phases and keep the best epoch's weights (:class:`BestDevWeights`); without
    it, or without ``--dev``, the last epoch's student is kept. ``average_last`` (>= 2, with
    a dev split and ``keep_best``): the mean of the last that many epochs' weights (of the
    last phase) is scored on dev too, and kept if it beats every single epoch.
    """
    from kerasllm.compression import distillation

    started = time.time()
    if replace_epochs < 0:
        raise ValueError(f"--replace-epochs must be >= 0, got {replace_epochs}")
    if not 0.0 <= replace_start_rate <= 1.0:
        raise ValueError(f"--replace-start-rate must be in [0, 1], got {replace_start_rate}")
    replace_lr = options.lr if replace_lr is None else replace_lr
    replace_alpha = alpha if replace_alpha is None else replace_alpha
    if not 0.0 <= replace_alpha <= 1.0:
        raise ValueError(f"--replace-alpha must be in [0, 1] (the label-loss weight), got {replace_alpha}")
    if not replace_lr > 0:
        raise ValueError(f"--replace-lr must be > 0, got {replace_lr}")
    if replace_epochs and preset is not None:
        raise ValueError("--replace-epochs needs a student taken from the teacher's blocks (--every or --layers), not --preset")
    if average_last < 0 or average_last == 1:
        raise ValueError(f"--average-last must be 0 (off) or >= 2 (epochs to average), got {average_last}")
    if average_last and not (keep_best and options.dev):
        raise ValueError("--average-last scores the averaged weights on dev: it needs --dev and --keep-best")
    if options.augment and options.augment_phase == "replace" and not replace_epochs:
        raise ValueError("--augment-phase replace feeds the copies to the --replace-epochs only: pass --replace-epochs N")
    if options.augment and options.augment_phase == "distill" and not options.epochs:
        raise ValueError("--augment-phase distill feeds the copies to the --epochs of distillation only: pass --epochs N")
    teacher, data = load(options, needs_train=True, log=log)
    os.makedirs(options.out, exist_ok=True)
    if preset is not None:
        if every is not None or layers is not None:
            raise ValueError("give --preset or --every/--layers, not both")
        student = distillation.student_from_preset(teacher, preset)
        origin = f"preset {preset}"
        chosen = None
    else:
        if every is None and layers is None:
            every = 2
        student = distillation.student_from_teacher(teacher, every=every, layers=layers)
        chosen = list(student.teacher_blocks)
        origin = f"teacher blocks {chosen}"
    if freeze_embeddings is None:
        freeze_embeddings = preset is None
    trained_config = student.kerasllm_config
    if freeze_embeddings:
        from kerasllm.models import peft

        peft.freeze(student, embeddings=True)
    hidden_layers = None
    if hidden:
        if chosen is None:
            raise ValueError("--hidden needs a student taken from the teacher's blocks (--every or --layers)")
        hidden_layers = distillation.hidden_pairs(teacher.kerasllm_config.num_layers, chosen, hidden_map)
    uses_logits = bool(alpha < 1.0 or hidden_layers)
    with_teacher = uses_logits or bool(replace_epochs)
    distiller = distillation.Distiller(
        teacher if uses_logits else None,
        student,
        temperature=temperature,
        alpha=alpha,
        hidden_layers=hidden_layers,
        hidden_weight=hidden_weight,
    )
    best = None
    if keep_best and data.windows("dev") is not None:
        best = BestDevWeights(student, data, log=log, average_last=average_last)
    elif keep_best:
        log("no --dev: keeping the student of the last epoch")
    frozen = ", embeddings frozen" if freeze_embeddings else ""
    log(f"student: {origin}, {student.count_params():,} parameters (teacher {teacher.count_params():,}{frozen}); "
        + (f"T={temperature}, alpha={alpha}" + (f", hidden pairs {hidden_layers}" if hidden_layers else "")
           if uses_logits else "no teacher (hard labels only)"))
    if replace_epochs:
        ramp = max(1, int(0.8 * replace_epochs * data.steps_per_epoch()))
        replacer = distillation.ModuleReplacer(teacher, student, start_rate=replace_start_rate, ramp_steps=ramp,
                                               alpha=replace_alpha, temperature=temperature, seed=options.seed)
        log(f"module replacing: student blocks stand in for teacher blocks {replacer.groups}, "
            f"rate {replace_start_rate} -> 1 over {ramp} steps, lr {replace_lr:g}"
            + (f"; loss {replace_alpha} x labels + {1 - replace_alpha:g} x KL (T={temperature})"
               if replace_alpha < 1 else "; labels only"))
        data.use_augmented = options.augment_phase in ("both", "replace")
        compile_for_training(replacer, data, epochs=replace_epochs, lr=replace_lr)
        if best is not None:
            best.phase = "replace"
        fit(replacer, data, epochs=replace_epochs, log=log, best=best, teacher=teacher if replace_alpha < 1 else None)
    data.use_augmented = options.augment_phase in ("both", "distill")
    compile_for_training(distiller, data)
    if best is not None:
        best.phase = "distill"
    # Logits alone (no hidden states) come from the teacher once per window, not once per step.
    fit(distiller, data, log=log, best=best, teacher=teacher if uses_logits and not hidden_layers else None)
    if best is not None and average_last:
        best.score_average()
    kept = best.restore() if best is not None else None
    if freeze_embeddings and not trained_config.freeze_embeddings:
        # what froze the tables here is not the saved student's setting: a later fine-tune chooses its own
        student.kerasllm_config = trained_config
        student.get_layer("embeddings").trainable = True
    folder = save_folder(student, data, options.out)
    settings = {
        "student": origin,
        "layers": student.kerasllm_config.num_layers,
        "temperature": temperature if (alpha < 1.0) else None,
        "alpha": alpha,
        "hidden_layers": hidden_layers,
        "teacher": bool(with_teacher),
        "epochs": options.epochs,
        "replace_epochs": replace_epochs,
        "replace_start_rate": replace_start_rate if replace_epochs else None,
        "replace_lr": replace_lr if replace_epochs else None,
        "replace_alpha": replace_alpha if replace_epochs else None,
        "kept_epoch": list(kept) if kept else "last",
        "dev_f1_kept": best.best_f1 if kept else None,
        "dev_f1_by_epoch": best.history if best is not None else None,
        "average_last": average_last or None,
        "freeze_embeddings": bool(freeze_embeddings),
        "augment": ({"copies": options.augment, "mentions": options.augment_mentions, "tokens": options.augment_tokens,
                     "names": options.augment_names, "phase": options.augment_phase}
                    if options.augment else None),
        "seed": options.seed,
    }
    default = f"student {student.kerasllm_config.num_layers}L " + ("distilled" if with_teacher else "no teacher")
    if replace_epochs:
        default += " (module replacing)"
    return measure(data, options.out, _name(options, default), "distill", student, settings=settings,
                   model_dir=folder, started=started, log=log)
