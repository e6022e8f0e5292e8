"""Keras (tf_keras) layers: attention, Transformer blocks, embeddings, masks."""
from kerasllm.layers.activations import gelu, gelu_tanh, get_activation
from kerasllm.layers.attention import MultiHeadAttention, update_cache
from kerasllm.layers.decoder_block import TransformerDecoderBlock
from kerasllm.layers.embeddings import TransformerEmbedding, sinusoidal_positions
from kerasllm.layers.encoder_block import TransformerEncoderBlock
from kerasllm.layers.feedforward import FeedForward
from kerasllm.layers.masks import causal_mask, combine_masks, expand_attention_mask

__all__ = [
    "FeedForward",
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
