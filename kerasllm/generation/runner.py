"""Compiled forward passes of a GPT or encoder-decoder model for decoding.

A :class:`ModelRunner` reads a model's layers by name (``embeddings``,
``decoder_layer_{i}``, ``final_norm`` / ``decoder_final_norm``,
``encoder_layer_{i}``, ``encoder_final_norm``) and wraps three passes in
``tf.function`` with shape-relaxed input signatures, so each traces once per
model whatever the batch, prompt or cache length:

- ``prefill``: the whole (left-padded) prompt written into a zero cache
  ``[layers, batch, 2, cache_length, heads, head_dim]``;
- ``decode``: one new token per row at slot ``cache_index`` (the key/value
  cache keeps a fixed size, updated by the attention layers' one-hot write);
  optionally reorders the cache rows first (beam search); the greedy/sampling
  loop (``kerasllm.generation.search``) runs :meth:`ModelRunner.forward` for
  many tokens inside one compiled ``tf.while_loop``;
- ``full``: the uncached reference, the whole sequence recomputed.

Each returns float32 logits of the last position only, through a 2-D matmul
with the tied embedding table. The table comes in as a tensor argument
(:meth:`ModelRunner.head_table`, read once per generation) rather than being
read from its variable at every step: once a variable has been gathered from
(the input embedding does that), TensorFlow copies the whole variable on every
later dense read, which for GPT-2's 50257 x 768 table costs more than the rest
of the step.
"""
import weakref

import tensorflow as tf

_RUNNERS = weakref.WeakKeyDictionary()


def runner_for(model):
    """The (cached) :class:`ModelRunner` of ``model``."""
    runner = _RUNNERS.get(model)
    if runner is None:
        runner = ModelRunner(model)
        _RUNNERS[model] = runner
    return runner


def _layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _layers(model, prefix):
    found = []
    while True:
        layer = _layer(model, f"{prefix}{len(found)}")
        if layer is None:
            return found
        found.append(layer)


class ModelRunner:
    """Compiled decoding passes over one kerasllm GPT or encoder-decoder model.

    Args:
        model: a model from :func:`kerasllm.models.gpt_decoder` or
            :func:`kerasllm.models.encoder_decoder` (or loaded from one).

    Attributes:
        seq2seq: True for encoder-decoder models.
        vocab_size, max_position, learned_positions: from the model's config.
    """

    def __init__(self, model):
        config = getattr(model, "kerasllm_config", None)
        if config is None:
            raise ValueError(
                "generate needs a model built by kerasllm.models (gpt_decoder or encoder_decoder, "
                "or from_pretrained of one); this model has no kerasllm_config"
            )
        if config.model_type not in ("gpt", "encoder_decoder"):
            raise ValueError(
                f"generate needs a GPT (causal LM) or encoder-decoder model; this one has "
                f"model_type={config.model_type!r}, which has no language-model head to decode from"
            )
        task = getattr(model, "kerasllm_task", {}).get("task")
        if task not in (None, "causal_lm", "seq2seq_lm"):
            raise ValueError(f"generate needs a causal_lm or seq2seq_lm model, got task {task!r}")
        self.config = config
        self.seq2seq = config.model_type == "encoder_decoder"
        self.embeddings = model.get_layer("embeddings")
        self.blocks = _layers(model, "decoder_layer_")
        self.final_norm = _layer(model, "decoder_final_norm" if self.seq2seq else "final_norm")
        self.encoder_blocks = _layers(model, "encoder_layer_") if self.seq2seq else []
        self.encoder_norm = _layer(model, "encoder_final_norm") if self.seq2seq else None
        if not self.blocks:
            raise ValueError(f"model {model.name!r} has no decoder_layer_0; it is not a kerasllm decoder")
        self.vocab_size = config.vocab_size
        self.max_position = config.max_position
        self.learned_positions = config.position_embedding == "learned"
        self.cache_dtype = tf.as_dtype(self.blocks[0].compute_dtype)
        self._compiled = {}

    # ------------------------------------------------------------------ shapes
    def cache_shape(self, batch, length):
        c = self.config
        return [len(self.blocks), batch, 2, length, c.num_heads, c.head_dim]

    def zero_cache(self, batch, length):
        return tf.zeros(self.cache_shape(batch, length), self.cache_dtype)

    def cache_spec(self, name="cache"):
        c = self.config
        return tf.TensorSpec([len(self.blocks), None, 2, None, c.num_heads, c.head_dim], self.cache_dtype, name=name)

    def context_spec(self):
        """Encoder keys/values and mask (encoder-decoder), or nothing."""
        if not self.seq2seq:
            return ()
        return (self.cache_spec("cross_cache"), tf.TensorSpec([None, None], tf.int32, name="encoder_mask"))

    # ------------------------------------------------------------------ graph pieces
    def head_table(self):
        """The tied embedding table ``[vocab, hidden]`` as a tensor (one dense read of the variable)."""
        return tf.convert_to_tensor(self.embeddings.token_embeddings)

    def table_spec(self):
        return tf.TensorSpec([self.vocab_size, self.config.hidden_size], self.embeddings.token_embeddings.dtype)

    def _logits(self, hidden, table):
        """Float32 logits ``[rows, vocab]`` of the last position of ``[rows, length, hidden]`` (tied embedding)."""
        hidden = hidden[:, -1:]
        if self.final_norm is not None:
            hidden = self.final_norm(hidden)  # built for rank 3
        hidden = tf.cast(hidden[:, 0], table.dtype)
        return tf.cast(tf.matmul(hidden, table, transpose_b=True), tf.float32)

    def forward(self, ids, positions, mask, table, cache=None, index=None, context=(), encoder_outputs=None):
        """Decoder pass (graph code): logits of the last position, and the updated cache if one is given.

        ``ids``/``positions`` ``[b, n]``; ``mask`` ``[b, S]`` over the cache slots
        (``[b, n]`` without a cache); ``index`` the slot of ``ids[:, 0]``;
        ``context`` the encoder's cross-attention cache and mask, or
        ``encoder_outputs`` (with the mask in ``context[1]``) for the uncached pass.
        ``cache`` is one tensor ``[layers, ...]`` or a tuple of per-layer caches
        (returned in the same form; a loop that carries the tuple avoids
        re-stacking the whole cache at every step).
        """
        x = self.embeddings(ids, position_ids=positions, training=False)
        new_cache = []
        for i, block in enumerate(self.blocks):
            extra = {}
            if self.seq2seq:
                extra["encoder_attention_mask"] = context[1]
                if encoder_outputs is not None:
                    extra["encoder_outputs"] = encoder_outputs
                else:
                    extra["cross_attention_cache"] = context[0][i]
            if cache is None:
                x = block(x, attention_mask=mask, training=False, **extra)
            else:
                x, layer_cache = block(
                    x, attention_mask=mask, cache=cache[i], cache_index=index, training=False, **extra
                )
                new_cache.append(layer_cache)
        logits = self._logits(x, table)
        if cache is None:
            return logits
        return logits, (tuple(new_cache) if isinstance(cache, (tuple, list)) else tf.stack(new_cache))

    def _encode(self, ids, mask):
        x = self.embeddings(ids, training=False)
        for block in self.encoder_blocks:
            x = block(x, attention_mask=mask, training=False)
        return self.encoder_norm(x) if self.encoder_norm is not None else x

    # ------------------------------------------------------------------ compiled passes
    def compile_once(self, key, build, jit_compile=False):
        """``tf.function`` of ``build() -> (fn, input_signature)``, built once per ``key`` and XLA setting."""
        key = (key, bool(jit_compile))
        if key not in self._compiled:
            fn, signature = build()
            self._compiled[key] = tf.function(fn, input_signature=signature, jit_compile=bool(jit_compile))
        return self._compiled[key]

    def encoder(self):
        """``encode(ids [b, n], mask [b, n]) -> (outputs [b, n, hidden], cross_cache [layers, b, 2, n, h, d])``."""

        def build():
            def encode(ids, mask):
                outputs = self._encode(ids, mask)
                cross = tf.stack([block.cross_attention.compute_kv(outputs) for block in self.blocks])
                return outputs, tf.cast(cross, self.cache_dtype)

            ids = tf.TensorSpec([None, None], tf.int32)
            return encode, [ids, ids]

        return self.compile_once("encode", build, False)

    def prefill(self, jit_compile=False):
        """``prefill(ids [b, n], positions [b, n], slot_mask [b, S], cache, context, table) -> (logits [b, V], cache)``."""

        def build():
            def prefill(ids, positions, slot_mask, cache, context, table):
                return self.forward(ids, positions, slot_mask, table, cache, tf.constant(0, tf.int32), context)

            ints = tf.TensorSpec([None, None], tf.int32)
            return prefill, [ints, ints, ints, self.cache_spec(), self.context_spec(), self.table_spec()]

        return self.compile_once("prefill", build, jit_compile)

    def decode(self, reorder=False, jit_compile=False):
        """``decode(tokens [b], positions [b], index, slot_mask, cache, context, table[, source_rows]) -> (logits, cache)``.

        With ``reorder=True`` the cache rows are first gathered by ``source_rows``
        ``[b]`` (the beam each new row continues).
        """

        def build():
            def decode(tokens, positions, index, slot_mask, cache, context, table, source_rows=None):
                if source_rows is not None:
                    cache = tf.gather(cache, source_rows, axis=1)
                return self.forward(tokens[:, None], positions[:, None], slot_mask, table, cache, index, context)

            rows = tf.TensorSpec([None], tf.int32)
            signature = [
                rows, rows, tf.TensorSpec([], tf.int32), tf.TensorSpec([None, None], tf.int32),
                self.cache_spec(), self.context_spec(), self.table_spec(),
            ]
            return decode, signature + ([rows] if reorder else [])

        return self.compile_once(("decode", reorder), build, jit_compile)

    def full(self):
        """``full(ids [b, t], positions [b, t], mask [b, t], context, table) -> logits [b, V]``: no cache."""

        def build():
            def full(ids, positions, mask, context, table):
                if self.seq2seq:
                    return self.forward(
                        ids, positions, None, table, context=(None, context[1]), encoder_outputs=context[0]
                    )
                return self.forward(ids, positions, mask, table)

            ints = tf.TensorSpec([None, None], tf.int32)
            context = ()
            if self.seq2seq:
                hidden = tf.TensorSpec([None, None, self.config.hidden_size], self.cache_dtype)
                context = (hidden, ints)
            return full, [ints, ints, ints, context, self.table_spec()]

        return self.compile_once("full", build, False)
