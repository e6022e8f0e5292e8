"""Keras (tf_keras) layers: attention, Transformer blocks, embeddings, masks, LoRA and adapters."""
from kerasllm.layers.activations import gelu, gelu_tanh, get_activation
from kerasllm.layers.adapter import Adapter
from kerasllm.layers.attention import MultiHeadAttention, update_cache
from kerasllm.layers.decoder_block import TransformerDecoderBlock
from kerasllm.layers.embeddings import TransformerEmbedding, sinusoidal_positions
from kerasllm.layers.encoder_block import TransformerEncoderBlock
from kerasllm.layers.feedforward import FeedForward
from kerasllm.layers.lora import LORA_TARGETS, LoRA
from kerasllm.layers.masks import causal_mask, combine_masks, expand_attention_mask

__all__ = [
    "Adapter",
    "FeedForward",
    "LORA_TARGETS",
    "LoRA",
    "MultiHeadAttention",
    "TransformerDecoderBlock",
    "TransformerEmbedding",
    "TransformerEncoderBlock",
    "causal_mask",
    "combine_masks",
    "expand_attention_mask",
    "gelu",
    "gelu_tanh",
    "get_activation",
    "sinusoidal_positions",
    "update_cache",
]
