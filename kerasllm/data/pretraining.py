"""Pretraining inputs in ``tf.data``: causal-LM blocks, and masked-LM batches with next-sentence pairs.

:func:`tokenize_documents` runs the tokenizer once over the documents (whole,
or line by line for sentence pairs); everything below builds on its output,
which is best saved (``Dataset.save``) because tokenizing is the slow part.

Causal LM (GPT):

- :func:`causal_lm_blocks`: documents (tokenized), each followed by a separator
  (the end-of-text token), concatenated into one stream and cut into
  consecutive, non-overlapping blocks of ``block_size + 1`` ids. Every token of
  the text lands in exactly one block, except the tokens after the last full
  block (the final partial block), which are dropped.
- :func:`causal_lm_dataset`: ``({"input_ids": block[:-1], "attention_mask"},
  block[1:])`` batches; the targets are the inputs shifted by one.

Masked LM (BERT):

- :func:`sentence_chunks`: each document's lines (its sentences) grouped into
  chunks of consecutive sentences of about ``max_tokens`` ids, so that
  sequences are packed to the full length within a document (BERT); without
  next-sentence prediction, :func:`packed_segments` packs across documents
  instead, a ``[SEP]`` after each (RoBERTa), so no position is padding.
- :func:`next_sentence_pairs`: each chunk split at a random sentence boundary
  into segments A and B; for half of the pairs (and always for a one-sentence
  chunk) B is replaced by a chunk of another document, labelled 1 ("not
  next"); true continuations are labelled 0, as in BERT.
- :func:`mask_tokens`: dynamic masking with TensorFlow Text's
  ``mask_language_model`` (``RandomItemSelector`` + ``MaskValuesChooser``):
  ``ceil(rate * n)`` of each sequence's ``n`` selectable tokens (or whole words)
  are picked, then 80% become ``[MASK]``, 10% a random token, 10% stay.
  Special tokens are never picked.
- :func:`masked_lm_dataset`: batches in the layout
  :func:`kerasllm.models.bert_pretraining` trains on: inputs ``input_ids``,
  ``attention_mask``, ``token_type_ids`` ``[batch, seq_length]`` and labels
  ``{"mlm_logits": ids at masked positions, -100 elsewhere, "nsp_logits": 0/1}``.

A tokenizer here is anything with ``tf_tokenize(strings) -> RaggedTensor``
(``WordPieceTokenizer``, ``BytePairTokenizer``).
"""
import tensorflow as tf
import tensorflow_text as tf_text

IGNORE_INDEX = -100
_NO_CAP = 1 << 30


def tokenize_documents(documents, tokenizer, by_line=False, batch_size=64):
    """Token ids of every document, the input of the block and chunk builders below.

    Args:
        documents: a dataset of document strings, or of ``(key, text)`` pairs
            (:meth:`TextCorpus.documents` with ``with_keys=True``); plain strings
            are keyed by their position.
        tokenizer: has ``tf_tokenize``.
        by_line: tokenize each line on its own and record the lines' lengths
            (sentences for next-sentence pairs; lines without ids are dropped).
            Otherwise the whole document is tokenized as one text and is one
            "sentence".
        batch_size: documents per tokenizer call.

    Returns:
        A dataset of dicts: ``doc`` (int64 key), ``ids`` (int32 ``[n]``),
        ``sentence_lengths`` (int32, summing to ``n``). Save it
        (``Dataset.save``) and build on the saved copy: the tokenizer is the
        slow part, and its graph is large.
    """
    if not isinstance(documents.element_spec, tuple):
        documents = documents.enumerate()

    def tokenize(keys, texts):
        if by_line:
            lines = tf.strings.split(texts, "\n")  # [docs, (lines)]
            per_line = tf.cast(tokenizer.tf_tokenize(lines.flat_values), tf.int32)
            lengths = tf.cast(per_line.row_lengths(), tf.int32)
            kept = lengths > 0
            line_doc = lines.value_rowids()
            ids = tf.RaggedTensor.from_value_rowids(
                tf.ragged.boolean_mask(per_line, kept).flat_values,
                tf.repeat(tf.boolean_mask(line_doc, kept), tf.boolean_mask(lengths, kept)),
                nrows=tf.shape(texts, out_type=tf.int64)[0],
            )
            sentence_lengths = tf.RaggedTensor.from_value_rowids(
                tf.boolean_mask(lengths, kept), tf.boolean_mask(line_doc, kept), nrows=lines.nrows()
            )
        else:
            ids = tf.cast(tokenizer.tf_tokenize(texts), tf.int32)
            sentence_lengths = tf.RaggedTensor.from_tensor(tf.cast(ids.row_lengths(), tf.int32)[:, None])
        return {"doc": keys, "ids": ids, "sentence_lengths": sentence_lengths}

    batches = documents.batch(batch_size).map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.unbatch()


# ----------------------------------------------------------------------------- causal LM


def causal_lm_blocks(tokenized, block_size, separator_id):
    """Consecutive blocks of ``block_size + 1`` token ids from tokenized documents.

    Args:
        tokenized: from :func:`tokenize_documents`.
        block_size: model inputs per block (each block holds one more id, so
            that inputs and targets can be shifted).
        separator_id: appended after every document (GPT-2's ``<|endoftext|>``).

    Returns:
        A dataset of int32 ``[block_size + 1]`` vectors. The ids after the last
        full block are dropped.

    Example:
        >>> class Chars:  # one id per character: 'a' -> 97
        ...     def tf_tokenize(self, texts):
        ...         return tf.strings.unicode_decode(texts, "UTF-8")
        >>> docs = tokenize_documents(tf.data.Dataset.from_tensor_slices(["ab", "cde"]), Chars())
        >>> [b.tolist() for b in causal_lm_blocks(docs, 2, 0).as_numpy_iterator()]
        [[97, 98, 0], [99, 100, 101]]
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    separator = tf.constant([separator_id], tf.int32)
    with_separators = tokenized.map(lambda doc: tf.concat([doc["ids"], separator], 0))
    return with_separators.unbatch().batch(block_size + 1, drop_remainder=True)


def causal_lm_example(block):
    """``({"input_ids", "attention_mask"}, targets)`` of one block (or a batch of blocks)."""
    inputs = block[..., :-1]
    return {"input_ids": inputs, "attention_mask": tf.ones_like(inputs)}, block[..., 1:]


def causal_lm_dataset(blocks, batch_size, shuffle_seed=None, repeat=False, shuffle_buffer=10_000, drop_remainder=False):
    """Batches of :func:`causal_lm_example` from a dataset of blocks.

    Args:
        blocks: from :func:`causal_lm_blocks`.
        batch_size: blocks per batch.
        shuffle_seed: shuffle the blocks (a new order every pass, fixed by the
            seed); None keeps the order.
        repeat: repeat forever (training).
        shuffle_buffer: blocks held by the shuffle.
        drop_remainder: drop the last, smaller batch (static batch shape).
    """
    if shuffle_seed is not None:
        blocks = blocks.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    if repeat:
        blocks = blocks.repeat()
    batches = blocks.batch(batch_size, drop_remainder=drop_remainder or repeat)
    return batches.map(causal_lm_example).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- masked LM


def sentence_chunks(tokenized, max_tokens):
    """Chunks of consecutive sentences (lines) of each document, about ``max_tokens`` ids each.

    A sentence joins chunk ``c`` when the number of ids before it in its
    document is in ``[c * max_tokens, (c + 1) * max_tokens)``, so a chunk ends
    at a sentence boundary and may run over ``max_tokens`` by part of its last
    sentence (the pairing trims it).

    Args:
        tokenized: from :func:`tokenize_documents` with ``by_line=True``.
        max_tokens: the token budget of a chunk.

    Returns:
        A dataset of dicts: ``doc`` (int64 key), ``tokens`` (int32 ids of the
        chunk), ``sentence_lengths`` (int32 ids per sentence, summing to the
        number of ``tokens``).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")

    def chunks_of(doc):
        lengths = tf.cast(doc["sentence_lengths"], tf.int64)
        starts = tf.cumsum(lengths, exclusive=True)
        _, chunk = tf.unique(starts // max_tokens)  # non-decreasing, so chunks are numbered 0, 1, ...
        chunk = tf.cast(chunk, tf.int64)
        tokens = tf.RaggedTensor.from_value_rowids(doc["ids"], tf.repeat(chunk, lengths))
        sentence_lengths = tf.RaggedTensor.from_value_rowids(doc["sentence_lengths"], chunk)
        key = doc["doc"]
        # Row by row (slicing a RaggedTensor with from_tensor_slices trips a TF type-inference warning).
        return tf.data.Dataset.range(tokens.nrows()).map(
            lambda i: {"doc": key, "tokens": tokens[i], "sentence_lengths": sentence_lengths[i]}
        )

    return tokenized.flat_map(chunks_of)


def packed_segments(tokenized, max_tokens, separator_id):
    """Segments of exactly ``max_tokens`` ids cut from all documents, a separator after each document.

    The full-length packing of masked-LM training without next-sentence pairs
    (RoBERTa's "full sentences"): a segment may hold the end of one document,
    the separator (``[SEP]``) and the start of the next. Returns a dataset of
    ``{"tokens"}`` dicts, the input :func:`masked_lm_dataset` takes with
    ``next_sentence=False``.
    """
    blocks = causal_lm_blocks(tokenized, max_tokens - 1, separator_id)
    return blocks.map(lambda block: {"tokens": block})


def next_sentence_pairs(chunks, random_chunks, seed):
    """Segment pairs ``{"a", "b", "next_sentence_label"}`` for next-sentence prediction.

    Each chunk is split after a random number ``k`` of its sentences
    (``1 <= k < n``): A is the first ``k`` sentences. With probability 1/2, or
    always when the chunk has a single sentence, B is the next element of
    ``random_chunks`` if it comes from another document (label 1); otherwise B
    is the rest of the chunk, the true continuation of A (label 0). A
    single-sentence chunk whose random partner is from its own document is
    dropped. The draws are stateless functions of ``seed`` and the pair's
    position, so the same inputs give the same pairs.

    Args:
        chunks: from :func:`sentence_chunks` (the A segments, in order).
        random_chunks: chunks to draw random B segments from, e.g. the same
            chunks shuffled and repeated.
        seed: an int.
    """
    draws = tf.data.Dataset.random(seed=seed)

    def pair(chunk, other, draw):
        lengths = chunk["sentence_lengths"]
        n = tf.size(lengths)
        coin = tf.random.stateless_uniform([], seed=tf.stack([draw, 0])) < 0.5
        k = tf.random.stateless_uniform(
            [], seed=tf.stack([draw, 1]), minval=1, maxval=tf.maximum(n, 2), dtype=tf.int32
        )
        a_length = tf.reduce_sum(lengths[:k])
        tokens = chunk["tokens"]
        use_random = (coin | (n < 2)) & tf.not_equal(other["doc"], chunk["doc"])
        b = tf.cond(use_random, lambda: other["tokens"], lambda: tokens[a_length:])
        return {"a": tokens[:a_length], "b": b, "next_sentence_label": tf.cast(use_random, tf.int32)}

    pairs = tf.data.Dataset.zip((chunks, random_chunks, draws)).map(pair, num_parallel_calls=tf.data.AUTOTUNE)
    return pairs.filter(lambda p: tf.size(p["b"]) > 0)


def _words(input_ids, continuation):
    """``[batch, (tokens)]`` -> ``[batch, (words), (pieces)]``: a word starts at every non-continuation token."""
    flat = input_ids.flat_values
    starts = tf.logical_not(tf.gather(continuation, flat))
    row_starts = tf.boolean_mask(input_ids.row_starts(), input_ids.row_lengths() > 0)
    first_of_row = tf.scatter_nd(
        row_starts[:, None], tf.ones_like(row_starts, tf.bool), tf.shape(flat, out_type=tf.int64)
    )
    starts = starts | first_of_row  # a row never begins inside a word
    words = tf.RaggedTensor.from_row_starts(flat, tf.where(starts)[:, 0])
    words_per_row = tf.reduce_sum(tf.cast(input_ids.with_flat_values(starts), tf.int64), axis=1)
    return tf.RaggedTensor.from_row_lengths(words, words_per_row)


def mask_tokens(
    input_ids,
    vocab_size,
    mask_id,
    special_ids,
    rate=0.15,
    mask_token_rate=0.8,
    random_token_rate=0.1,
    continuation=None,
    max_selections=None,
):
    """BERT's dynamic masking of a batch, with TensorFlow Text's ``mask_language_model``.

    Args:
        input_ids: int32 ``RaggedTensor`` ``[batch, (tokens)]`` (no padding).
        vocab_size: random replacements are drawn from ``[0, vocab_size)``.
        mask_id: the ``[MASK]`` id.
        special_ids: ids never selected (``[CLS]``, ``[SEP]``, ``[PAD]``, ...).
        rate: each sequence gets ``ceil(rate * n)`` (computed in float32) of
            its ``n`` selectable tokens (or words) selected.
        mask_token_rate, random_token_rate: of the selected tokens, the share
            replaced by ``[MASK]`` and by a random id; the rest stay unchanged.
        continuation: whole-word masking: a bool vector ``[vocab_size]``, True
            for ids that continue a word (WordPiece ``##`` pieces); a word is
            selected or left as a whole. None masks tokens independently.
        max_selections: at most this many selections per sequence (None: no cap).

    Returns:
        ``(masked_ids, labels)``, ragged like ``input_ids``: ``labels`` holds
        the original id at selected positions and ``-100`` elsewhere.

    Example:
        >>> ids = tf.ragged.constant([[2, 10, 11, 12, 13, 14, 3]], tf.int32)
        >>> masked, labels = mask_tokens(ids, vocab_size=20, mask_id=4, special_ids=[0, 2, 3], rate=0.2)
        >>> int(tf.reduce_sum(tf.cast(labels.flat_values != -100, tf.int32)))  # ceil(0.2 * 5)
        1
    """
    selector = tf_text.RandomItemSelector(
        max_selections_per_batch=max_selections or _NO_CAP,
        selection_rate=rate,
        unselectable_ids=[int(i) for i in special_ids],
    )
    chooser = tf_text.MaskValuesChooser(vocab_size, mask_id, mask_token_rate, random_token_rate)
    items = input_ids if continuation is None else _words(input_ids, continuation)
    masked, positions, originals = tf_text.mask_language_model(items, selector, chooser, axis=1)
    # Labels: the original ids scattered to the selected positions of each row.
    flat_positions = tf.gather(masked.row_starts(), positions.value_rowids()) + positions.flat_values
    labels = tf.tensor_scatter_nd_update(
        tf.fill(tf.shape(masked.flat_values), tf.constant(IGNORE_INDEX, masked.flat_values.dtype)),
        flat_positions[:, None],
        tf.cast(originals.flat_values, masked.flat_values.dtype),
    )
    return masked, masked.with_flat_values(labels)


def continuation_table(vocabulary, prefix="##"):
    """Bool vector: True for WordPiece tokens that continue a word (for whole-word masking)."""
    return tf.constant([token.startswith(prefix) for token in vocabulary], tf.bool)


def masked_lm_dataset(
    chunks,
    tokenizer,
    seq_length,
    batch_size,
    next_sentence=True,
    whole_word=False,
    rate=0.15,
    seed=0,
    training=True,
    shuffle_buffer=10_000,
):
    """Masked-LM (+ next-sentence) batches from :func:`sentence_chunks` output.

    Args:
        chunks: with ``next_sentence``, :func:`sentence_chunks` made with
            ``max_tokens = seq_length - 3``; else :func:`packed_segments` with
            ``max_tokens = seq_length - 2``. Cache them (tokenizing is the slow part).
        tokenizer: a :class:`~kerasllm.tokenizers.WordPieceTokenizer` (special
            ids, vocabulary for whole words).
        seq_length: padded length of every sequence, ``[CLS]``/``[SEP]`` included.
        batch_size: sequences per batch.
        next_sentence: ``[CLS] A [SEP] B [SEP]`` pairs with a next-sentence label
            (segments trimmed round-robin to fit); else ``[CLS] chunk [SEP]``.
        whole_word: mask whole words.
        rate: the selection rate of :func:`mask_tokens`.
        seed: seeds the chunk order, the random B segments and the pair draws.
        training: shuffle, repeat forever, drop the last partial batch. Else one
            pass in order (evaluation).
        shuffle_buffer: chunks held by each shuffle.

    Returns:
        A dataset of ``(inputs, labels)``; inputs ``input_ids``,
        ``attention_mask``, ``token_type_ids`` int32 ``[batch, seq_length]``;
        labels ``{"mlm_logits": [batch, seq_length]}`` plus ``"nsp_logits":
        [batch]`` with ``next_sentence``.
    """
    if tokenizer.mask_id is None:
        raise ValueError("masked-LM pretraining needs a vocabulary with a [MASK] token")
    reserved = 3 if next_sentence else 2
    if seq_length <= reserved:
        raise ValueError(f"seq_length must be > {reserved}, got {seq_length}")
    cls_id, sep_id, pad_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
    special = sorted({cls_id, sep_id, pad_id, tokenizer.mask_id})
    continuation = continuation_table(tokenizer.get_vocabulary()) if whole_word else None
    first = chunks.shuffle(shuffle_buffer, seed=seed).repeat() if training else chunks
    if next_sentence:
        partners = chunks.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True).repeat()
        examples = next_sentence_pairs(first, partners, seed + 2)
    else:
        examples = first.map(lambda c: {"a": c["tokens"]})
    batches = examples.ragged_batch(batch_size, drop_remainder=training)
    trimmer = tf_text.RoundRobinTrimmer(seq_length - reserved)

    def to_model_inputs(batch):
        segments = [batch["a"], batch["b"]] if next_sentence else [batch["a"]]
        # equal-length segments (packed_segments) come out of ragged_batch as a dense tensor
        segments = [s if isinstance(s, tf.RaggedTensor) else tf.RaggedTensor.from_tensor(s) for s in segments]
        ids, types = tf_text.combine_segments(trimmer.trim(segments), cls_id, sep_id)
        masked, labels = mask_tokens(
            tf.cast(ids, tf.int32), tokenizer.vocab_size, tokenizer.mask_id, special,
            rate=rate, continuation=continuation, max_selections=seq_length,
        )
        input_ids, attention_mask = tf_text.pad_model_inputs(masked, seq_length, pad_value=pad_id)
        token_type_ids, _ = tf_text.pad_model_inputs(tf.cast(types, tf.int32), seq_length, pad_value=0)
        mlm_labels, _ = tf_text.pad_model_inputs(labels, seq_length, pad_value=IGNORE_INDEX)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": tf.cast(attention_mask, tf.int32),
            "token_type_ids": token_type_ids,
        }
        targets = {"mlm_logits": mlm_labels}
        if next_sentence:
            targets["nsp_logits"] = batch["next_sentence_label"]
        return inputs, targets

    # Masking runs on one thread so that its random draws follow the batch order.
    return batches.map(to_model_inputs).prefetch(tf.data.AUTOTUNE)
