"""Decoding loops: greedy / sampling (streamable) and beam search.

Greedy decoding and sampling with the cache run ``chunk`` steps (model pass,
Hugging Face's logit processors, token choice, end-token bookkeeping) inside one
compiled ``tf.while_loop`` (XLA when asked) and hand the tokens back between
chunks, so they can be streamed (``chunk=1``) and the loop stops once every row
has ended. Beam search runs its model pass and top-k in compiled steps and its
bookkeeping in NumPy, following Hugging Face Transformers' ``generate`` (4.57)
step for step, so the same model and settings give the same tokens.
"""
import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from kerasllm.generation.processors import (
    repetition_penalty,
    sample_tokens,
    top_k_filter,
    top_p_filter,
)

_BEAM_FILTER = -1.0e9  # Hugging Face's "never pick this" score offset in beam search


@dataclasses.dataclass
class Prepared:
    """A batch ready to decode (see ``kerasllm.generation.api.prepare``).

    ``ids``/``mask``/``positions`` ``[b, P]`` are the left-padded prompt (causal
    LM) or the decoder start token (encoder-decoder); ``lengths`` ``[b]`` the real
    tokens per row; ``cache_length`` the key/value slots; ``context`` the
    encoder's cross-attention keys/values and mask, ``full_context`` its outputs
    and mask (uncached path); ``seen`` ``[b, vocab]`` bool the prompt tokens (only
    with a repetition penalty).
    """

    ids: np.ndarray
    mask: np.ndarray
    positions: np.ndarray
    lengths: np.ndarray
    cache_length: int
    context: tuple = ()
    full_context: tuple = ()
    seen: Optional[tf.Tensor] = None

    @property
    def prompt_length(self):
        return self.ids.shape[1]

    @property
    def batch_size(self):
        return self.ids.shape[0]


# ------------------------------------------------------------------ forward passes
class CachedForward:
    """Logits of the next token, one new token per row per call, with the fixed-size cache."""

    def __init__(self, runner, prepared, jit_compile):
        self.runner, self.p, self.jit = runner, prepared, jit_compile
        self.slot_mask = np.concatenate(
            [prepared.mask, np.ones((prepared.batch_size, prepared.cache_length - prepared.prompt_length), np.int32)],
            axis=1,
        )
        self.lengths = prepared.lengths
        self.context = prepared.context
        self.table = runner.head_table()
        self.cache = None
        self.steps = 0

    def first(self):
        p = self.p
        fn = self.runner.prefill()
        logits, self.cache = fn(
            p.ids, p.positions, self.slot_mask, self.runner.zero_cache(p.batch_size, p.cache_length), self.context,
            self.table,
        )
        return logits

    def expand(self, n):
        """Repeat every row ``n`` times (beams), cache included."""
        self.cache = tf.repeat(self.cache, n, axis=1)
        self.slot_mask = np.repeat(self.slot_mask, n, axis=0)
        self.lengths = np.repeat(self.lengths, n, axis=0)
        if self.context:
            self.context = (tf.repeat(self.context[0], n, axis=1), tf.repeat(self.context[1], n, axis=0))

    def next(self, tokens, source_rows=None):
        """Logits after appending ``tokens`` ``[rows]`` (to the rows ``source_rows`` continue, if given)."""
        index = np.int32(self.p.prompt_length + self.steps)
        positions = (self.lengths + self.steps).astype(np.int32)
        args = [np.asarray(tokens, np.int32), positions, index, self.slot_mask, self.cache, self.context, self.table]
        if source_rows is not None:
            args.append(np.asarray(source_rows, np.int32))
        fn = self.runner.decode(reorder=source_rows is not None, jit_compile=self.jit)
        logits, self.cache = fn(*args)
        self.steps += 1
        return logits


class FullForward:
    """The same interface without a cache: the whole sequence is recomputed at every step."""

    def __init__(self, runner, prepared):
        self.runner, self.p = runner, prepared
        self.ids, self.mask, self.positions = prepared.ids, prepared.mask, prepared.positions
        self.lengths = prepared.lengths
        self.context = prepared.full_context
        self.table = runner.head_table()
        self.steps = 0

    def first(self):
        return self.runner.full()(self.ids, self.positions, self.mask, self.context, self.table)

    def expand(self, n):
        self.ids, self.mask, self.positions, self.lengths = (
            np.repeat(a, n, axis=0) for a in (self.ids, self.mask, self.positions, self.lengths)
        )
        if self.context:
            self.context = tuple(tf.repeat(c, n, axis=0) for c in self.context)

    def next(self, tokens, source_rows=None):
        if source_rows is not None:
            self.ids = self.ids[np.asarray(source_rows)]
        rows = len(tokens)
        self.ids = np.concatenate([self.ids, np.asarray(tokens, np.int32)[:, None]], axis=1)
        self.mask = np.concatenate([self.mask, np.ones((rows, 1), np.int32)], axis=1)
        self.positions = np.concatenate([self.positions, (self.lengths + self.steps)[:, None].astype(np.int32)], axis=1)
        self.steps += 1
        return self.first()


def forward_for(runner, prepared, config):
    if config.use_cache:
        return CachedForward(runner, prepared, config.jit_compile)
    return FullForward(runner, prepared)


# ------------------------------------------------------------------ compiled token choice
def _seen_spec(runner):
    return tf.TensorSpec([None, runner.vocab_size], tf.bool)


def _observe_fn(runner):
    """``observe(seen, tokens, source_rows) -> seen``: the rows continued, plus the token appended."""

    def build():
        def observe(seen, tokens, source_rows):
            seen = tf.gather(seen, source_rows)
            return tf.logical_or(seen, tf.one_hot(tokens, runner.vocab_size, on_value=True, off_value=False))

        rows = tf.TensorSpec([None], tf.int32)
        return observe, [_seen_spec(runner), rows, rows]

    return runner.compile_once("observe", build)


def _chooser(config):
    """The token choice of ``config`` as graph code, and a key naming its static settings.

    ``choose(logits [b, V], seen, penalty, temperature, top_p, seed [2]) -> tokens [b]``:
    Hugging Face's repetition penalty, then greedy argmax, or temperature,
    top-k, top-p and a draw.
    """
    penalty_on = config.repetition_penalty != 1.0
    sample = config.decoding == "sample"
    temperature_on = sample and config.temperature not in (None, 1.0)
    top_k = config.resolved_top_k() if sample else 0
    top_p_on = sample and config.top_p not in (None, 1.0)

    def choose(logits, seen, penalty, temperature, top_p, seed):
        if penalty_on:
            logits = repetition_penalty(logits, seen, penalty)
        if not sample:
            return tf.argmax(logits, axis=-1, output_type=tf.int32)
        if temperature_on:
            logits = logits / temperature
        if top_k:
            logits = top_k_filter(logits, top_k)
        if top_p_on:
            logits = top_p_filter(logits, top_p)
        return sample_tokens(logits, seed)

    return choose, (penalty_on, sample, temperature_on, top_k, top_p_on)


def _settings(config):
    """The tensor settings of the token choice: penalty, temperature, top-p."""
    return [np.float32(config.repetition_penalty), np.float32(config.temperature or 1.0), np.float32(config.top_p or 1.0)]


_SCALAR = tf.TensorSpec([], tf.float32)


def _choose_fn(runner, config):
    """Compiled ``choose`` for the step-by-step (uncached) loop."""
    choose, key = _chooser(config)

    def build():
        signature = [tf.TensorSpec([None, runner.vocab_size], tf.float32), _seen_spec(runner), _SCALAR, _SCALAR,
                     _SCALAR, tf.TensorSpec([2], tf.int32)]
        return choose, signature

    return runner.compile_once(("choose",) + key, build, config.jit_compile)


def _loop_fn(runner, config, chunk):
    """Compiled loop of up to ``chunk`` cached steps: choose a token, append it, run it through the model.

    ``loop(logits, cache, seen, finished, first_step, count, prompt_length, lengths, slot_mask, context, table,
    eos, pad, penalty, temperature, top_p, seed) -> (tokens [b, chunk], steps, logits, cache, seen, finished)``.
    It stops after ``count`` steps or once every row has produced an end token.
    """
    choose, key = _chooser(config)
    penalty_on = key[0]
    vocab = runner.vocab_size

    def build():
        def loop(logits, cache, seen, finished, first_step, count, prompt_length, lengths, slot_mask, context, table,
                 eos, pad, penalty, temperature, top_p, seed):
            slots = tf.range(chunk)

            def body(i, logits, cache, seen, finished, tokens):
                step = first_step + i
                new = choose(logits, seen, penalty, temperature, top_p, tf.stack([seed, step]))
                new = tf.where(finished, pad, new)
                finished = tf.logical_or(finished, tf.reduce_any(tf.equal(new[:, None], eos[None, :]), axis=1))
                if penalty_on:
                    seen = tf.logical_or(seen, tf.one_hot(new, vocab, on_value=True, off_value=False))
                tokens = tf.where(tf.equal(slots, i)[None, :], new[:, None], tokens)
                logits, cache = runner.forward(
                    new[:, None], (lengths + step)[:, None], slot_mask, table, cache, prompt_length + step, context
                )
                return i + 1, logits, cache, seen, finished, tokens

            def more(i, logits, cache, seen, finished, tokens):
                return tf.logical_and(i < count, tf.logical_not(tf.reduce_all(finished)))

            tokens = tf.zeros([tf.shape(logits)[0], chunk], tf.int32)
            layers = tuple(tf.unstack(cache, num=len(runner.blocks)))
            i, logits, layers, seen, finished, tokens = tf.while_loop(
                more, body, [tf.constant(0), logits, layers, seen, finished, tokens], maximum_iterations=chunk
            )
            return tokens, i, logits, tf.stack(layers), seen, finished

        rows = tf.TensorSpec([None], tf.int32)
        scalar_int = tf.TensorSpec([], tf.int32)
        signature = [
            tf.TensorSpec([None, vocab], tf.float32), runner.cache_spec(), _seen_spec(runner),
            tf.TensorSpec([None], tf.bool), scalar_int, scalar_int, scalar_int, rows,
            tf.TensorSpec([None, None], tf.int32), runner.context_spec(), runner.table_spec(),
            rows, scalar_int, _SCALAR, _SCALAR, _SCALAR, scalar_int,
        ]
        return loop, signature

    return runner.compile_once(("loop", chunk) + key, build, config.jit_compile)


def _beam_choose_fn(runner, num_beams, keep, penalty_on, jit_compile):
    """``choose(logits [b*beams, V], seen, penalty, beam_scores [b, beams]) -> (scores, ids) [b, keep]``."""
    vocab = runner.vocab_size

    def build():
        def choose(logits, seen, penalty, beam_scores):
            log_probs = tf.nn.log_softmax(logits, axis=-1)
            if penalty_on:
                log_probs = repetition_penalty(log_probs, seen, penalty)
            total = tf.reshape(log_probs, [-1, num_beams, vocab]) + beam_scores[:, :, None]
            return tf.math.top_k(tf.reshape(total, [-1, num_beams * vocab]), k=keep)

        signature = [tf.TensorSpec([None, vocab], tf.float32), _seen_spec(runner), tf.TensorSpec([], tf.float32),
                     tf.TensorSpec([None, num_beams], tf.float32)]
        return choose, signature

    return runner.compile_once(("beam_choose", num_beams, keep, penalty_on), build, jit_compile)


def _no_seen(rows, runner):
    return tf.zeros([rows, runner.vocab_size], tf.bool)


# ------------------------------------------------------------------ greedy and sampling
def token_steps(runner, prepared, config, seed, chunk=1):
    """Yield the new token of every row ``[batch]`` (int32), step by step.

    A row that has produced one of ``eos_token_id`` gets ``pad_token_id`` from
    then on; the loop ends after ``max_new_tokens`` steps or when every row has
    ended. With the cache, ``chunk`` steps run in one compiled call (tokens are
    yielded when it returns); the tokens do not depend on ``chunk``.
    """
    rows = prepared.batch_size
    penalty_on = config.repetition_penalty != 1.0
    seen = prepared.seen if penalty_on else _no_seen(rows, runner)
    eos = np.asarray(config.eos_ids(), np.int32)
    pad = np.int32(config.pad_token_id)
    forward = forward_for(runner, prepared, config)
    logits = forward.first()
    if not config.use_cache:
        yield from _uncached_steps(runner, forward, logits, seen, config, seed, eos, pad)
        return
    loop = _loop_fn(runner, config, chunk)
    finished = np.zeros(rows, bool)
    step = 0
    while step < config.max_new_tokens:
        count = min(chunk, config.max_new_tokens - step)
        tokens, done, logits, forward.cache, seen, finished = loop(
            logits, forward.cache, seen, finished, np.int32(step), np.int32(count), np.int32(prepared.prompt_length),
            prepared.lengths, forward.slot_mask, forward.context, forward.table, eos, pad, *_settings(config),
            np.int32(seed),
        )
        done = int(done)
        tokens = tokens.numpy()
        for j in range(done):
            yield tokens[:, j]
        step += done
        if finished.numpy().all():
            return


def _uncached_steps(runner, forward, logits, seen, config, seed, eos, pad):
    """The same loop one step at a time, the whole sequence recomputed per token (the reference)."""
    choose = _choose_fn(runner, config)
    observe = _observe_fn(runner) if config.repetition_penalty != 1.0 else None
    rows = len(forward.ids)
    identity = np.arange(rows, dtype=np.int32)
    finished = np.zeros(rows, bool)
    for step in range(config.max_new_tokens):
        tokens = choose(logits, seen, *_settings(config), np.array([seed, step], np.int32)).numpy()
        tokens = np.where(finished, pad, tokens).astype(np.int32)
        finished |= np.isin(tokens, eos)
        yield tokens
        if finished.all() or step + 1 == config.max_new_tokens:
            return
        if observe is not None:
            seen = observe(seen, tokens, identity)
        logits = forward.next(tokens)


# ------------------------------------------------------------------ beam search
def _best(scores, count):
    """Indices of the ``count`` largest entries of each row, largest first (stable for ties)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :count]


def _take(array, index):
    """``array[b, index[b, j], ...]``."""
    return np.take_along_axis(array, index.reshape(index.shape + (1,) * (array.ndim - 2)), axis=1)


def beam_search(runner, prepared, config):
    """Beam search as Hugging Face's ``generate(num_beams=..., do_sample=False)``.

    Returns ``(tokens, lengths, scores)``: the best finished beam of every row
    ``[b, max_new_tokens]`` (padded with ``pad_token_id``), its number of new
    tokens ``[b]`` and its length-penalised score ``[b]``.
    """
    beams = config.resolved_num_beams()
    eos = np.asarray(config.eos_ids(), np.int64)
    keep = max(2, 1 + len(eos)) * beams
    vocab = runner.vocab_size
    batch, prompt = prepared.batch_size, prepared.prompt_length
    max_length = prompt + config.max_new_tokens
    penalty_on = config.repetition_penalty != 1.0
    length_penalty = float(config.length_penalty)
    early = config.early_stopping

    forward = forward_for(runner, prepared, config)
    choose = _beam_choose_fn(runner, beams, keep, penalty_on, config.jit_compile)
    penalty = np.float32(config.repetition_penalty)
    seen = tf.repeat(prepared.seen, beams, axis=0) if penalty_on else _no_seen(batch * beams, runner)
    observe = _observe_fn(runner) if penalty_on else None

    fill = config.pad_token_id
    running = np.full((batch, beams, max_length), fill, np.int64)
    running[:, :, :prompt] = prepared.ids[:, None, :]
    running_scores = np.zeros((batch, beams), np.float32)
    running_scores[:, 1:] = _BEAM_FILTER
    finished = running.copy()
    finished_scores = np.full((batch, beams), _BEAM_FILTER, np.float32)
    finished_lengths = np.zeros((batch, beams), np.int64)
    is_finished = np.zeros((batch, beams), bool)
    improvable = np.ones(batch, bool)
    top_beams = np.arange(keep) < beams
    batch_rows = np.arange(batch)[:, None]

    logits = forward.first()
    forward.expand(beams)
    logits = tf.repeat(logits, beams, axis=0)
    cur = prompt
    while True:
        values, indices = choose(logits, seen, penalty, running_scores)
        values, indices = values.numpy(), indices.numpy().astype(np.int64)
        source_beam, token = indices // vocab, indices % vocab
        candidates = _take(running, source_beam).copy()  # [b, keep, max_length]
        candidates[:, :, cur] = token
        hits = np.isin(token, eos) | (cur + 1 >= max_length)

        # the best `beams` unfinished candidates run on
        running_values = (values + hits.astype(np.float32) * np.float32(_BEAM_FILTER)).astype(np.float32)
        chosen = _best(running_values, beams)
        running = _take(candidates, chosen)
        running_scores = _take(running_values, chosen)
        source_rows = (batch_rows * beams + _take(source_beam, chosen)).reshape(-1)

        # the candidates among the top `beams` that just ended compete with the finished beams
        ended = hits & top_beams[None, :]
        scores = values / np.float32((cur + 1 - prompt) ** length_penalty)
        full = is_finished.all(axis=1, keepdims=True) & (early is True)
        scores = scores + np.float32(_BEAM_FILTER) * (full | ~improvable[:, None]).astype(np.float32)
        scores = (scores + np.float32(_BEAM_FILTER) * (~ended).astype(np.float32)).astype(np.float32)
        merged_scores = np.concatenate([finished_scores, scores], axis=1)
        best = _best(merged_scores, beams)
        finished = _take(np.concatenate([finished, candidates], axis=1), best)
        finished_scores = _take(merged_scores, best)
        finished_lengths = _take(np.concatenate([finished_lengths, np.full((batch, keep), cur + 1 - prompt)], axis=1), best)
        is_finished = _take(np.concatenate([is_finished, ended], axis=1), best)

        cur += 1
        if early == "never" and length_penalty > 0.0:
            best_length = max_length - prompt
        else:
            best_length = cur - prompt
        best_running = running_scores[:, :1] / np.float32(best_length ** length_penalty)
        worst_finished = np.where(is_finished, finished_scores.min(axis=1, keepdims=True), np.float32(_BEAM_FILTER))
        improvable &= (best_running > worst_finished).any(axis=1)
        all_full = is_finished.all() and early is True
        if not improvable.any() or all_full or hits.all():
            break

        tokens = running[:, :, cur - 1].reshape(-1).astype(np.int32)
        if observe is not None:
            seen = observe(seen, tokens, source_rows.astype(np.int32))
        logits = forward.next(tokens, source_rows)

    lengths = finished_lengths[:, 0]
    tokens = np.full((batch, config.max_new_tokens), fill, np.int64)
    for row in range(batch):
        tokens[row, : lengths[row]] = finished[row, 0, prompt : prompt + lengths[row]]
    return tokens.astype(np.int32), lengths.astype(np.int32), finished_scores[:, 0].astype(np.float32)
