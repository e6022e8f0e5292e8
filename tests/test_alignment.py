"""Sub-word label alignment and long-sentence windows (pure Python / NumPy)."""
import random

import numpy as np
import pytest

from kerasllm.data import align_labels, make_windows, merge_window_predictions


def test_align_labels_first_subword_gets_the_label():
    # Words: "Johanson"(B-PER=1) "lives"(O=0) "in"(O=0) "Reykjavik"(B-LOC=3)
    # Sub-words: [CLS] Johan ##son lives in Rey ##kja ##vik [SEP] [PAD] [PAD]
    word_ids = [None, 0, 0, 1, 2, 3, 3, 3, None, None, None]
    assert align_labels(word_ids, [1, 0, 0, 3]) == [-100, 1, -100, 0, 0, 3, -100, -100, -100, -100, -100]
    assert align_labels(word_ids, [1, 0, 0, 3], ignore_index=-1)[:3] == [-1, 1, -1]


def test_align_labels_small_cases():
    # [CLS] w0 w1a w1b [SEP]: word 1's second piece gets the ignore value.
    assert align_labels([None, 0, 1, 1, None], [5, 6]) == [-100, 5, 6, -100, -100]
    assert align_labels([], []) == []


def test_align_labels_rejects_out_of_range_word():
    with pytest.raises(ValueError, match="position 2 points to word 2, but there are 2 word labels"):
        align_labels([None, 0, 2], [1, 1])


def test_make_windows_hand_worked():
    # counts 1 2 1 3 1 1, 4 slots, stride 2:
    #   window 1: words 0-2 use 1+2+1 = 4 slots (word 3 with 3 more does not fit);
    #   next start: from word 1 the overlap would be 2+1 = 3 > 2, from word 2 it is 1 <= 2
    #     and 1 + 3 (word 3) = 4 fits -> start 2;
    #   window 2: words 2-3 use 1+3 = 4; from word 3 the overlap is 3 > 2, so start 4;
    #   window 3: words 4-5 use 2 and reach the end.
    assert make_windows([1, 2, 1, 3, 1, 1], max_subwords=4, stride=2) == [(0, 3), (2, 4), (4, 6)]
    # A sentence that fits is one window.
    assert make_windows([2, 2, 2], max_subwords=6, stride=3) == [(0, 3)]
    assert make_windows([], max_subwords=5, stride=1) == [(0, 0)]
    # stride 0: windows just touch.
    assert make_windows([1] * 5, max_subwords=2, stride=0) == [(0, 2), (2, 4), (4, 5)]
    # stride 1 with one-sub-word words: each window repeats one word.
    assert make_windows([1] * 5, max_subwords=3, stride=1) == [(0, 3), (2, 5)]


def test_make_windows_properties_on_random_sentences():
    rng = random.Random(1234)
    for _ in range(300):
        counts = [rng.choice([0, 1, 1, 1, 2, 3, 5]) for _ in range(rng.randint(1, 120))]
        max_subwords = rng.randint(max(counts + [1]), 40)
        stride = rng.randint(0, max_subwords - 1)
        windows = make_windows(counts, max_subwords, stride)
        assert windows[0][0] == 0 and windows[-1][1] == len(counts)
        covered = set()
        for (start, end), (next_start, next_end) in zip(windows, windows[1:]):
            assert start < next_start <= end < next_end  # progress, no gaps
            overlap = sum(counts[next_start:end])
            assert overlap <= stride
        for start, end in windows:
            assert start < end
            assert sum(counts[start:end]) <= max_subwords  # whole words, within the size
            covered.update(range(start, end))
        assert covered == set(range(len(counts)))
        if sum(counts) <= max_subwords:
            assert windows == [(0, len(counts))]


def test_make_windows_overlap_is_close_to_stride():
    # With one-sub-word words the overlap is exactly the stride.
    windows = make_windows([1] * 100, max_subwords=10, stride=4)
    for (_, end), (next_start, _) in zip(windows, windows[1:]):
        assert end - next_start == 4


def test_make_windows_errors():
    with pytest.raises(ValueError, match="word 2 has 9 sub-words, more than the 8"):
        make_windows([1, 1, 9, 1], max_subwords=8, stride=2)
    with pytest.raises(ValueError, match="stride must be in"):
        make_windows([1, 1], max_subwords=4, stride=4)
    with pytest.raises(ValueError, match="max_subwords must be >= 1"):
        make_windows([1], max_subwords=0, stride=0)


def test_merge_takes_each_word_from_the_window_with_most_context():
    # 7 words, windows (0,5) and (2,7). Words 2,3,4 are in both.
    #   word 2: window A (0,5) -> lost context only after it: 5-1-2 = 2 words;
    #           window B (2,7) -> cut right before it: 0           -> A
    #   word 3: A: 5-1-3 = 1;  B: 3-2 = 1 (B's right edge is the sentence end) -> tie -> A
    #   word 4: A: 0;          B: 4-2 = 2                                      -> B
    num_labels = 3
    a = np.full((5, num_labels), 1.0)
    b = np.full((5, num_labels), 2.0)
    merged = merge_window_predictions(7, [(0, 5), (2, 7)], [a, b])
    assert merged.shape == (7, num_labels)
    assert merged[:, 0].tolist() == [1, 1, 1, 1, 2, 2, 2]


def test_merge_picks_central_window_of_three():
    # Word 5 of 12 is in windows (0,7), (3,10) and (5,12). Context kept around it:
    #   (0,7):  left edge is the sentence start (no cut), right 7-1-5 = 1  -> 1
    #   (3,10): left 5-3 = 2, right 10-1-5 = 4                           -> 2
    #   (5,12): left 5-5 = 0 (cut right before it)                        -> 0
    # so the middle window wins.
    windows = [(0, 7), (3, 10), (5, 12)]
    scores = [np.full((e - s, 2), float(i)) for i, (s, e) in enumerate(windows)]
    merged = merge_window_predictions(12, windows, scores)
    assert merged[5, 0] == 1.0
    # Round trip with make_windows: every word is predicted exactly once.
    counts = [1, 2, 1, 1, 3, 1, 1, 2, 1, 1]
    windows = make_windows(counts, max_subwords=6, stride=3)
    scores = [np.arange(s, e, dtype=float)[:, None].repeat(4, axis=1) for s, e in windows]
    merged = merge_window_predictions(len(counts), windows, scores)
    assert merged[:, 0].tolist() == list(range(len(counts)))


def test_merge_never_truncates_silently():
    with pytest.raises(ValueError, match=r"words \[3, 4\] are in no window"):
        merge_window_predictions(5, [(0, 3)], [np.zeros((3, 2))])
    with pytest.raises(ValueError, match="window 0 covers 3 words but its scores have shape"):
        merge_window_predictions(3, [(0, 3)], [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="2 windows but 1 score arrays"):
        merge_window_predictions(3, [(0, 2), (1, 3)], [np.zeros((2, 2))])
