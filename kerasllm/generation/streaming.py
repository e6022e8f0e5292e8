"""``TextStreamer``: print generated text as the tokens arrive."""
import sys


class TextStreamer:
    """A :func:`~kerasllm.generation.generate` streamer that writes the text of one prompt as it grows.

    Byte-level BPE tokens can end in the middle of a UTF-8 character; text is
    held back until the character is complete, so what is written is always
    the prefix of the final text. The end-of-text token (``eos_token_id``) is
    not shown.

    Args:
        tokenizer: anything with ``decode(ids) -> str``.
        write: where text goes (default ``sys.stdout.write``, flushed).
        eos_token_id: id or ids never written; default the tokenizer's ``eos_id``.

    Attributes:
        text: everything written so far.

    Example:

    >>> class Chars:
    ...     def decode(self, ids):
    ...         return "".join(chr(i) for i in ids)
    >>> pieces = []
    >>> streamer = TextStreamer(Chars(), write=pieces.append)
    >>> for token in (72, 105, 33):
    ...     streamer([token])
    >>> streamer.end(); pieces
    ['H', 'i', '!']
    """

    def __init__(self, tokenizer, write=None, eos_token_id=None):
        self.tokenizer = tokenizer
        self._write = write
        if eos_token_id is None:
            eos_token_id = getattr(tokenizer, "eos_id", None)
        if eos_token_id is None:
            eos_token_id = []
        self.skip = {int(i) for i in (eos_token_id if isinstance(eos_token_id, (list, tuple, set)) else [eos_token_id])}
        self.ids = []
        self.text = ""

    def __call__(self, tokens):
        tokens = list(tokens)
        if len(tokens) != 1:
            raise ValueError(f"TextStreamer streams one prompt; got a batch of {len(tokens)} (decode the output instead)")
        token = int(tokens[0])
        if token in self.skip:
            return
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # an unfinished multi-byte character
            return
        self._emit(text)

    def _emit(self, text):
        if len(text) > len(self.text) and text.startswith(self.text):
            self._out(text[len(self.text):])
        self.text = text

    def _out(self, piece):
        if self._write is None:
            sys.stdout.write(piece)
            sys.stdout.flush()
        else:
            self._write(piece)

    def end(self):
        """Write what was held back (an incomplete character is written as U+FFFD)."""
        if self.ids:
            self._emit(self.tokenizer.decode(self.ids))
