"""Text generation with the key/value cache: greedy, sampling (temperature, top-k, top-p) and beam search.

``generate(model, prompts, max_new_tokens=..., decoding=...)`` decodes a batch of
prompts of any lengths (left-padded) with a GPT or an encoder-decoder model;
``stream`` yields the tokens as they come and ``TextStreamer`` prints them. The
settings and their semantics follow Hugging Face's ``generate``
(:class:`GenerationConfig`).
"""
from kerasllm.generation.api import GenerationOutput, generate, resolve_config, stream
from kerasllm.generation.config import DECODINGS, GenerationConfig
from kerasllm.generation.processors import repetition_penalty, sample_tokens, top_k_filter, top_p_filter
from kerasllm.generation.runner import ModelRunner, runner_for
from kerasllm.generation.streaming import TextStreamer

__all__ = [
    "DECODINGS",
    "GenerationConfig",
    "GenerationOutput",
    "ModelRunner",
    "TextStreamer",
    "generate",
    "repetition_penalty",
    "resolve_config",
    "runner_for",
    "sample_tokens",
    "stream",
    "top_k_filter",
    "top_p_filter",
]
