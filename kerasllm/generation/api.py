"""``generate`` and ``stream``: text generation with a GPT or encoder-decoder model."""
import dataclasses
from typing import List, Optional

import numpy as np
import tensorflow as tf

from kerasllm.generation.config import GenerationConfig
from kerasllm.generation.runner import runner_for
from kerasllm.generation.search import Prepared, beam_search, token_steps

# Cache slots are allocated in steps of this many, so that nearby prompt lengths
# share one compiled (XLA) decoding step.
CACHE_BLOCK = 32
# Decoding steps per compiled call when nothing is streamed (streaming runs one).
CHUNK = 32


@dataclasses.dataclass
class GenerationOutput:
    """What :func:`generate` returns.

    Attributes:
        sequences: ``[batch, prompt_length + new]`` int32 as Hugging Face
            returns them: the left-padded prompt (the decoder start token for
            encoder-decoder models) followed by the new tokens, rows that ended
            early padded with ``pad_token_id``.
        tokens: the new tokens of each row (a list of lists), up to and
            including the end token, without padding.
        texts: ``tokens`` decoded when a tokenizer was given (without the
            tokenizer's end-of-text token), else ``None``.
        scores: beam search only: the length-penalised log-probability of each
            returned beam ``[batch]``.
        prompt_length: the padded prompt length (columns of ``sequences``
            before the new tokens).
    """

    sequences: np.ndarray
    tokens: List[List[int]]
    texts: Optional[List[str]] = None
    scores: Optional[np.ndarray] = None
    prompt_length: int = 0


def resolve_config(config=None, **options):
    """A :class:`GenerationConfig` from ``config`` (or the defaults) with ``options`` applied."""
    if config is None:
        return GenerationConfig(**_checked(options))
    if not isinstance(config, GenerationConfig):
        raise TypeError(f"config must be a GenerationConfig, got {type(config).__name__}")
    return config.replace(**options) if options else config


def _checked(options):
    known = {f.name for f in dataclasses.fields(GenerationConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown generation option(s) {unknown}; options: {sorted(known)}")
    return options


# ------------------------------------------------------------------ inputs
def _as_rows(inputs, attention_mask, tokenizer):
    """The prompts as a list of int lists (padding removed) and whether they were strings."""
    if isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs)):
        if tokenizer is None:
            raise ValueError("text prompts need tokenizer=; or pass token ids")
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        return [tokenizer.encode(t).input_ids for t in texts], True
    if isinstance(inputs, (tf.Tensor, tf.RaggedTensor)):
        inputs = inputs.to_list() if isinstance(inputs, tf.RaggedTensor) else inputs.numpy()
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 1:
            inputs = inputs[None, :]
        if inputs.ndim != 2:
            raise ValueError(f"input ids must be [batch, length] (or one prompt [length]), got shape {inputs.shape}")
        if attention_mask is None:
            return [list(map(int, row)) for row in inputs], False
        mask = np.asarray(attention_mask)
        if mask.shape != inputs.shape:
            raise ValueError(f"attention_mask shape {mask.shape} differs from the input ids' {inputs.shape}")
        return [[int(t) for t, m in zip(row, mrow) if m] for row, mrow in zip(inputs, mask)], False
    if attention_mask is not None:
        raise ValueError("attention_mask goes with an array of input ids; lists of prompts need no mask")
    if not isinstance(inputs, (list, tuple)):
        raise TypeError(f"prompts must be token ids (a list, lists of lists or an array) or text, got {type(inputs).__name__}")
    if inputs and all(isinstance(t, (int, np.integer)) for t in inputs):
        inputs = [inputs]
    rows = []
    for i, row in enumerate(inputs):
        if isinstance(row, np.ndarray):
            row = row.tolist()
        if not isinstance(row, (list, tuple)) or not all(isinstance(t, (int, np.integer)) for t in row):
            raise TypeError(f"prompt {i} must be a list of token ids, got {row!r:.60}")
        rows.append([int(t) for t in row])
    return rows, False


def _fit_window(rows, runner, config):
    """Check the prompts against the vocabulary and the context window; truncate from the left if asked."""
    if not rows:
        raise ValueError("no prompts given; pass at least one prompt")
    window = runner.max_position if runner.learned_positions else None
    fitted = []
    for i, row in enumerate(rows):
        if not row:
            raise ValueError(
                f"prompt {i} is empty; give at least one token"
                + ("" if runner.seq2seq else " (e.g. the tokenizer's end-of-text token as a start)")
            )
        bad = [t for t in row if not 0 <= t < runner.vocab_size]
        if bad:
            raise ValueError(f"prompt {i} has token id {bad[0]}, outside the vocabulary [0, {runner.vocab_size})")
        if window is not None and not runner.seq2seq and len(row) + config.max_new_tokens > window:
            room = window - config.max_new_tokens
            if room < 1:
                raise ValueError(
                    f"max_new_tokens ({config.max_new_tokens}) leaves no room for the prompt in the model's context "
                    f"window of {window} tokens (max_position), which holds the prompt and the new tokens; lower it"
                )
            if config.truncate:
                row = row[-room:]
            elif len(row) > window:
                raise ValueError(
                    f"prompt {i} has {len(row)} tokens but the model's context window is {window} "
                    f"(max_position); shorten it or use truncate=True (--truncate) to keep its last {room} tokens"
                )
            else:
                raise ValueError(
                    f"prompt {i} ({len(row)} tokens) + max_new_tokens ({config.max_new_tokens}) exceeds the "
                    f"context window of {window} tokens; lower max_new_tokens to {window - len(row)} or use "
                    "truncate=True (--truncate) to drop the start of the prompt"
                )
        if window is not None and runner.seq2seq and (len(row) > window or config.max_new_tokens + 1 > window):
            raise ValueError(
                f"prompt {i} ({len(row)} tokens) or max_new_tokens ({config.max_new_tokens}) + 1 exceeds the "
                f"model's max_position={window}"
            )
        fitted.append(row)
    return fitted


def _left_pad(rows, pad):
    length = max(len(r) for r in rows)
    ids = np.full((len(rows), length), pad, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        ids[i, length - len(row):] = row
        mask[i, length - len(row):] = 1
    return ids, mask


def _seen(rows, vocab_size):
    seen = np.zeros((len(rows), vocab_size), bool)
    for i, row in enumerate(rows):
        seen[i, row] = True
    return tf.constant(seen)


def prepare(runner, rows, config):
    """Pad, position and (encoder-decoder) encode the prompts; see :class:`Prepared`."""
    seen = _seen(rows, runner.vocab_size) if config.repetition_penalty != 1.0 else None
    if runner.seq2seq:
        source, source_mask = _left_pad([r[::-1] for r in rows], config.pad_token_id)
        source, source_mask = source[:, ::-1].copy(), source_mask[:, ::-1].copy()  # right padding
        outputs, cross = runner.encoder()(source, source_mask)
        batch = len(rows)
        ids = np.full((batch, 1), config.decoder_start_token_id, np.int32)
        return Prepared(
            ids=ids,
            mask=np.ones_like(ids),
            positions=np.zeros_like(ids),
            lengths=np.ones(batch, np.int32),
            cache_length=_round_up(1 + config.max_new_tokens),
            context=(cross, tf.constant(source_mask)),
            full_context=(outputs, tf.constant(source_mask)),
            # Hugging Face penalises the decoder's own tokens only, starting with the start token.
            seen=_seen([[config.decoder_start_token_id]] * batch, runner.vocab_size) if seen is not None else None,
        )
    ids, mask = _left_pad(rows, config.pad_token_id)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    return Prepared(
        ids=ids,
        mask=mask,
        positions=positions,
        lengths=mask.sum(axis=1).astype(np.int32),
        cache_length=_round_up(ids.shape[1] + config.max_new_tokens),
        seen=seen,
    )


def _round_up(n):
    return -(-n // CACHE_BLOCK) * CACHE_BLOCK


def _complete(runner, config, tokenizer):
    """Fill in the ids the config leaves to the model or tokenizer."""
    changes = {}
    if config.eos_token_id is None and tokenizer is not None and getattr(tokenizer, "eos_id", None) is not None:
        changes["eos_token_id"] = tokenizer.eos_id
    eos = config.eos_ids() if "eos_token_id" not in changes else [changes["eos_token_id"]]
    if config.pad_token_id is None:
        changes["pad_token_id"] = eos[0] if eos else runner.config.pad_token_id
    if runner.seq2seq and config.decoder_start_token_id is None:
        changes["decoder_start_token_id"] = runner.config.pad_token_id
    if config.decoding == "sample" and config.seed is None:
        changes["seed"] = int(np.random.default_rng().integers(0, 2**31 - 1))
    config = config.replace(**changes) if changes else config
    for name, value in [("eos_token_id", i) for i in config.eos_ids()] + [
        ("pad_token_id", config.pad_token_id),
        ("decoder_start_token_id", config.decoder_start_token_id),
    ]:
        if value is not None and value >= runner.vocab_size:
            raise ValueError(f"{name}={value} is outside the model's vocabulary of {runner.vocab_size} tokens")
    return config


def _setup(model, inputs, config, options, attention_mask, tokenizer):
    config = resolve_config(config, **options)
    runner = runner_for(model)
    config = _complete(runner, config, tokenizer)
    rows, _ = _as_rows(inputs, attention_mask, tokenizer)
    rows = _fit_window(rows, runner, config)
    return runner, config, prepare(runner, rows, config)


# ------------------------------------------------------------------ public API
def stream(model, inputs, config=None, *, attention_mask=None, tokenizer=None, **options):
    """Yield the new token of every prompt as it is produced: an int32 array ``[batch]`` per step.

    Greedy decoding and sampling only (beam search settles its tokens at the
    end). Rows that have ended yield ``pad_token_id``. Arguments as
    :func:`generate`.

    Example:

    >>> import numpy as np
    >>> from kerasllm.models import get_preset, gpt_decoder
    >>> model = gpt_decoder(get_preset("gpt-tiny", vocab_size=64, num_layers=1, max_position=32))
    >>> steps = list(stream(model, [[1, 2, 3]], max_new_tokens=4))
    >>> len(steps), steps[0].shape
    (4, (1,))
    """
    if resolve_config(config, **options).decoding == "beam":
        raise ValueError("streaming works with decoding='greedy' or 'sample', not beam search (its beams change until the end)")
    runner, config, prepared = _setup(model, inputs, config, options, attention_mask, tokenizer)
    yield from token_steps(runner, prepared, config, config.seed or 0, chunk=1)


def generate(model, inputs, config=None, *, attention_mask=None, tokenizer=None, streamer=None, **options):
    """Generate text with a GPT (causal LM) or encoder-decoder model.

    Decoding uses the fixed-size key/value cache and compiled steps (one trace
    per model, whatever the prompt); prompts of different lengths are left-padded
    with positions counted from each prompt's first real token, so a prompt
    generates the same tokens alone or in a batch.

    Args:
        model: a model from :func:`kerasllm.models.gpt_decoder`,
            :func:`kerasllm.models.encoder_decoder` or ``from_pretrained``.
        inputs: one prompt (list of ids, or a string with ``tokenizer``), a list
            of prompts of any lengths, or an int array ``[batch, length]`` (with
            ``attention_mask`` for its padding). Encoder-decoder models take the
            source sequences.
        config: a :class:`GenerationConfig`; keyword ``options`` override its
            fields (``max_new_tokens=``, ``decoding=``, ``top_p=`` ...).
        attention_mask: ``[batch, length]`` 1 for real tokens of an array input.
        tokenizer: encodes string prompts, decodes ``texts`` and supplies
            ``eos_token_id`` when the config has none.
        streamer: called with the new tokens ``[batch]`` after every step (see
            :class:`kerasllm.generation.TextStreamer`); its ``end()`` is called at
            the end if it has one. Not with beam search.

    Returns:
        :class:`GenerationOutput`.

    Example:

    >>> from kerasllm.models import get_preset, gpt_decoder
    >>> model = gpt_decoder(get_preset("gpt-tiny", vocab_size=64, num_layers=1, max_position=32))
    >>> out = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=5)
    >>> out.sequences.shape, [len(t) for t in out.tokens]
    ((2, 8), [5, 5])
    >>> beams = generate(model, [1, 2, 3], max_new_tokens=5, decoding="beam", num_beams=3)
    >>> beams.scores.shape
    (1,)
    """
    runner, config, prepared = _setup(model, inputs, config, options, attention_mask, tokenizer)
    scores = None
    if config.decoding == "beam":
        if streamer is not None:
            raise ValueError("a streamer works with decoding='greedy' or 'sample', not beam search")
        new, lengths, scores = beam_search(runner, prepared, config)
        new = new[:, : lengths.max()]
    else:
        steps = []
        for tokens in token_steps(runner, prepared, config, config.seed or 0, chunk=1 if streamer else CHUNK):
            steps.append(tokens)
            if streamer is not None:
                streamer(tokens)
        if streamer is not None and hasattr(streamer, "end"):
            streamer.end()
        new = np.stack(steps, axis=1)
        lengths = _lengths(new, config.eos_ids())
    tokens = [new[i, : lengths[i]].tolist() for i in range(len(new))]
    texts = None
    if tokenizer is not None:
        hidden = getattr(tokenizer, "eos_id", None)  # the end-of-text token is not text; other stop tokens are
        texts = [tokenizer.decode([t for t in row if t != hidden]) for row in tokens]
    return GenerationOutput(
        sequences=np.concatenate([prepared.ids, new], axis=1).astype(np.int32),
        tokens=tokens,
        texts=texts,
        scores=scores,
        prompt_length=prepared.prompt_length,
    )


def _lengths(new, eos):
    """New tokens per row up to and including the first end token."""
    lengths = np.full(len(new), new.shape[1], np.int64)
    if eos:
        ended = np.isin(new, eos)
        first = ended.argmax(axis=1)
        lengths = np.where(ended.any(axis=1), first + 1, lengths)
    return lengths
