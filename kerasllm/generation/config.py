"""``GenerationConfig``: the decoding settings, validated with messages that say what to change."""
import dataclasses
from typing import List, Optional, Union

DECODINGS = ("greedy", "sample", "beam")
# Hugging Face's defaults for the settings left unset (``None``).
DEFAULT_TOP_K = 50
DEFAULT_NUM_BEAMS = 4
_SAMPLE_ONLY = ("temperature", "top_k", "top_p", "seed")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass
class GenerationConfig:
    """How :func:`kerasllm.generation.generate` decodes; names and meanings follow Hugging Face.

    Args:
        max_new_tokens: tokens to generate after the prompt (fewer if every row
            stops on an end token).
        decoding: ``"greedy"`` (argmax), ``"sample"`` (temperature, top-k,
            top-p) or ``"beam"`` (beam search).
        temperature: sampling only; logits are divided by it (default 1.0).
        top_k: sampling only; keep the ``top_k`` most likely tokens (default
            50 as in Hugging Face; 0 disables).
        top_p: sampling only; keep the smallest set of most likely tokens
            whose probability reaches ``top_p`` (default 1.0 = disabled).
        seed: sampling only; the same seed, prompts and settings give the
            same tokens (with or without XLA, streamed or not). ``None`` draws
            a fresh seed.
        num_beams: beam search only; beams per prompt (default 4).
        length_penalty: beam search only; a finished beam scores
            ``sum(log p) / generated_length ** length_penalty``.
        early_stopping: beam search only; ``True`` stops a prompt once
            ``num_beams`` beams have finished, ``False`` when no running beam
            can beat the finished ones (Hugging Face's heuristic), ``"never"``
            only at ``max_new_tokens`` (canonical beam search).
        repetition_penalty: every decoding; the logit of a token already in
            the prompt or the output is divided by it when positive and
            multiplied by it when negative (1.0 = off).
        eos_token_id: one id or a list of ids that end a row (the id is kept
            in the output). ``None``: never stop early.
        pad_token_id: id written after a row has ended and used to pad
            prompts; default the first ``eos_token_id``, else the model's
            ``pad_token_id``.
        decoder_start_token_id: encoder-decoder models only; the first
            decoder token (default the model's ``pad_token_id``, as T5).
        truncate: when a prompt and ``max_new_tokens`` do not fit the
            model's context window, drop the start of the prompt instead of
            raising.
        use_cache: decode with the fixed-size key/value cache; ``False``
            recomputes the whole sequence at every step (a reference, slow).
        jit_compile: compile the decoding steps with XLA (default: on; it is
            faster on CPU, see ``bench/generate_bench.py``).

    Example:

    >>> GenerationConfig(decoding="sample", top_p=0.9, seed=1).resolved_top_k()
    50
    >>> GenerationConfig(decoding="greedy", temperature=0.7)
    Traceback (most recent call last):
        ...
    ValueError: temperature=0.7 only applies to decoding='sample' (got decoding='greedy'); pass decoding='sample' or drop temperature
    """

    max_new_tokens: int = 32
    decoding: str = "greedy"
    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    seed: Optional[int] = None
    num_beams: Optional[int] = None
    length_penalty: float = 1.0
    early_stopping: Union[bool, str] = False
    repetition_penalty: float = 1.0
    eos_token_id: Union[None, int, List[int]] = None
    pad_token_id: Optional[int] = None
    decoder_start_token_id: Optional[int] = None
    truncate: bool = False
    use_cache: bool = True
    jit_compile: bool = True

    def __post_init__(self):
        if isinstance(self.eos_token_id, tuple):
            self.eos_token_id = list(self.eos_token_id)
        self.validate()

    def validate(self):
        """Raise one ``ValueError`` naming the first bad setting and what is allowed."""
        if self.decoding not in DECODINGS:
            raise ValueError(f"decoding={self.decoding!r} is unknown; choose one of {', '.join(DECODINGS)}")
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens!r} must be an integer >= 1")
        if self.decoding != "sample":
            for name in _SAMPLE_ONLY:
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} only applies to decoding='sample' (got decoding="
                        f"{self.decoding!r}); pass decoding='sample' or drop {name}"
                    )
        if self.decoding != "beam":
            if self.num_beams not in (None, 1):
                raise ValueError(
                    f"num_beams={self.num_beams!r} only applies to decoding='beam' (got decoding="
                    f"{self.decoding!r}); pass decoding='beam' or drop num_beams"
                )
        elif self.num_beams is not None and (not _is_int(self.num_beams) or self.num_beams < 2):
            raise ValueError(f"num_beams={self.num_beams!r} must be an integer >= 2 for beam search")
        if self.temperature is not None and (not _is_number(self.temperature) or self.temperature <= 0):
            raise ValueError(
                f"temperature={self.temperature!r} must be a number > 0 (for deterministic output use decoding='greedy')"
            )
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 0):
            raise ValueError(f"top_k={self.top_k!r} must be an integer >= 0 (0 disables top-k)")
        if self.top_p is not None and (not _is_number(self.top_p) or not 0 < self.top_p <= 1):
            raise ValueError(f"top_p={self.top_p!r} must be a number in (0, 1] (1 disables top-p)")
        if self.seed is not None and (not _is_int(self.seed) or not -(2**31) <= self.seed < 2**31):
            raise ValueError(f"seed={self.seed!r} must be an integer in [-2**31, 2**31)")
        if not _is_number(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty={self.repetition_penalty!r} must be a number > 0 (1.0 = off)")
        if not _is_number(self.length_penalty):
            raise ValueError(f"length_penalty={self.length_penalty!r} must be a number")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping={self.early_stopping!r} must be True, False or 'never'")
        ids = self.eos_ids()
        for name, value in [("eos_token_id", i) for i in ids] + [
            ("pad_token_id", self.pad_token_id),
            ("decoder_start_token_id", self.decoder_start_token_id),
        ]:
            if value is not None and (not _is_int(value) or value < 0):
                raise ValueError(f"{name}={value!r} must be a non-negative integer token id")

    def eos_ids(self):
        """The end tokens as a list (empty when none)."""
        if self.eos_token_id is None:
            return []
        if _is_int(self.eos_token_id):
            return [self.eos_token_id]
        if isinstance(self.eos_token_id, list):
            return list(self.eos_token_id)
        raise ValueError(f"eos_token_id={self.eos_token_id!r} must be an int, a list of ints or None")

    def resolved_top_k(self):
        return DEFAULT_TOP_K if self.top_k is None else self.top_k

    def resolved_num_beams(self):
        return DEFAULT_NUM_BEAMS if self.num_beams is None else self.num_beams

    def replace(self, **changes):
        """A validated copy with ``changes`` applied (unknown names are rejected)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown generation option(s) {unknown}; options: {sorted(known)}")
        return dataclasses.replace(self, **changes)
