"""Word labels on sub-word tokens, and long sentences cut into overlapping windows.

A WordPiece/BPE tokenizer splits a word into one or more sub-words, and the
model sees at most ``max_length`` of them including ``[CLS]`` and ``[SEP]``.
NER labels belong to words, so:

* :func:`align_labels` puts each word's label on its first sub-word and an
  ignore value everywhere else (the loss and metrics skip those positions);
* :func:`make_windows` splits a sentence that is too long for the model into
  overlapping windows of whole words, and :func:`merge_window_predictions`
  joins the per-window word predictions back into one per word, each word
  taken from the window that gives it the most context.

Nothing is ever truncated: every word of every sentence gets a prediction.
"""
import numpy as np


def align_labels(word_ids, word_label_ids, ignore_index=-100):
    """Spread word labels over sub-word positions.

    Args:
        word_ids: for every sub-word position, the index of the word it came
            from, or ``None`` for special tokens and padding.
        word_label_ids: the label id of every word.
        ignore_index: the value put on positions that carry no label (later
            sub-words of a word, specials, padding).

    Returns:
        A list of ints, one per position: ``word_label_ids[w]`` on the first
        sub-word of word ``w``, ``ignore_index`` elsewhere.

    Raises:
        ValueError: if a word id is negative or not below ``len(word_label_ids)``.

    Example:
        >>> # [CLS] Wash ##ington is [SEP] [PAD]
        >>> align_labels([None, 0, 0, 1, None, None], [3, 0])
        [-100, 3, -100, 0, -100, -100]
    """
    labels = list(word_label_ids)
    out = []
    previous = None
    for position, word in enumerate(word_ids):
        if word is None:
            out.append(ignore_index)
            previous = None
            continue
        word = int(word)
        if not 0 <= word < len(labels):
            raise ValueError(
                f"align_labels: position {position} points to word {word}, but there are "
                f"{len(labels)} word labels"
            )
        out.append(labels[word] if word != previous else ignore_index)
        previous = word
    return out


def make_windows(subword_counts, max_subwords, stride):
    """Split a sentence into overlapping windows of whole words.

    Each window is the longest run of words, starting at its first word, whose
    sub-words fit in ``max_subwords``. The next window starts as far back as
    possible while its overlap with the previous one stays within ``stride``
    sub-words (and it still reaches one word further), so consecutive windows
    share about ``stride`` sub-words of context.

    Args:
        subword_counts: number of sub-words of every word (0 is allowed).
        max_subwords: sub-word slots per window: the model's maximum length
            minus its special tokens (2 for ``[CLS] ... [SEP]``).
        stride: the wanted overlap in sub-words, ``0 <= stride < max_subwords``.

    Returns:
        A list of ``(start_word, end_word)`` spans (end exclusive) in order; the
        first starts at 0, the last ends at the number of words. A sentence that
        fits gives one window; an empty sentence gives ``[(0, 0)]``.

    Raises:
        ValueError: if ``max_subwords < 1``, ``stride`` is out of range, a count
            is negative, or a single word has more sub-words than
            ``max_subwords`` (naming the word).

    Example:
        >>> make_windows([1, 2, 1, 3, 1, 1], max_subwords=4, stride=2)
        [(0, 3), (2, 4), (4, 6)]
    """
    counts = [int(c) for c in subword_counts]
    max_subwords = int(max_subwords)
    stride = int(stride)
    if max_subwords < 1:
        raise ValueError(f"make_windows: max_subwords must be >= 1, got {max_subwords}")
    if not 0 <= stride < max_subwords:
        raise ValueError(
            f"make_windows: stride must be in [0, max_subwords) = [0, {max_subwords}), got {stride}"
        )
    for index, count in enumerate(counts):
        if count < 0:
            raise ValueError(f"make_windows: word {index} has a negative sub-word count ({count})")
        if count > max_subwords:
            raise ValueError(
                f"make_windows: word {index} has {count} sub-words, more than the {max_subwords} "
                "that fit in one window; raise the model's max length or split that word"
            )
    n = len(counts)
    if n == 0:
        return [(0, 0)]
    windows = []
    start = 0
    while True:
        end, used = start, 0
        while end < n and used + counts[end] <= max_subwords:
            used += counts[end]
            end += 1
        windows.append((start, end))
        if end == n:
            return windows
        # Move the start forward until the overlap fits the stride and the next
        # word (counts[end]) also fits; start == end always satisfies both.
        next_start = start + 1
        overlap = used - counts[start]
        while overlap > stride or overlap + counts[end] > max_subwords:
            overlap -= counts[next_start]
            next_start += 1
        start = next_start


def merge_window_predictions(num_words, windows, window_word_scores):
    """Join per-window word scores into one array for the whole sentence.

    A word covered by several windows takes its scores from the window where it
    is farthest from a cut edge, i.e. where the model saw the most words on
    both sides. An edge that is also the sentence's own start or end is not a
    cut (no context was lost there). Ties go to the earlier window.

    Args:
        num_words: number of words in the sentence.
        windows: the ``(start, end)`` spans from :func:`make_windows`.
        window_word_scores: one array ``[end - start, num_labels]`` per window
            (logits or probabilities of each word's first sub-word).

    Returns:
        A float array ``[num_words, num_labels]``.

    Raises:
        ValueError: if the windows and score arrays disagree in number or shape,
            a window is outside the sentence, or some word is in no window.

    Example:
        >>> import numpy as np
        >>> # words 2 and 3 are in both windows; word 2 has more context in the
        >>> # first (one word after it, none lost before), word 3 in the second.
        >>> scores = [np.zeros((4, 2)), np.ones((3, 2))]
        >>> merge_window_predictions(5, [(0, 4), (2, 5)], scores)[:, 0].tolist()
        [0.0, 0.0, 0.0, 1.0, 1.0]
    """
    windows = [(int(s), int(e)) for s, e in windows]
    if len(windows) != len(window_word_scores):
        raise ValueError(
            f"merge_window_predictions: {len(windows)} windows but {len(window_word_scores)} score arrays"
        )
    arrays = [np.asarray(a) for a in window_word_scores]
    num_labels = None
    for index, ((start, end), scores) in enumerate(zip(windows, arrays)):
        if not 0 <= start <= end <= num_words:
            raise ValueError(
                f"merge_window_predictions: window {index} = ({start}, {end}) is outside the "
                f"sentence of {num_words} words"
            )
        if scores.ndim != 2 or scores.shape[0] != end - start:
            raise ValueError(
                f"merge_window_predictions: window {index} covers {end - start} words but its scores "
                f"have shape {scores.shape}; expected [{end - start}, num_labels]"
            )
        if num_labels is None:
            num_labels = scores.shape[1]
        elif scores.shape[1] != num_labels:
            raise ValueError(
                f"merge_window_predictions: window {index} has {scores.shape[1]} labels, "
                f"window 0 has {num_labels}"
            )
    dtype = np.result_type(np.float32, *[a.dtype for a in arrays]) if arrays else np.float32
    merged = np.zeros((num_words, num_labels or 0), dtype=dtype)
    best = np.full(num_words, -1.0)
    for (start, end), scores in zip(windows, arrays):
        for word in range(start, end):
            left = word - start if start > 0 else float("inf")
            right = end - 1 - word if end < num_words else float("inf")
            context = min(left, right)
            if context > best[word]:
                best[word] = context
                merged[word] = scores[word - start]
    missing = np.flatnonzero(best < 0)
    if missing.size:
        raise ValueError(
            f"merge_window_predictions: words {missing[:10].tolist()}{' ...' if missing.size > 10 else ''} "
            f"are in no window; the windows must cover all {num_words} words"
        )
    return merged
