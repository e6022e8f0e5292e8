"""Keras (tf_keras) layers: attention, Transformer blocks, embeddings, masks, LoRA and adapters."""
from kerasllm.layers.activations import gelu, gelu_tanh, get_activation
from kerasllm.layers.adapter import Adapter
from kerasllm.layers.attention import ATTENTION_TYPES, MultiHeadAttention, update_cache
from kerasllm.layers.decoder_block import TransformerDecoderBlock
from kerasllm.layers.dropout import Dropout
from kerasllm.layers.embeddings import TransformerEmbedding, gather_dense_grad, sinusoidal_positions
from kerasllm.layers.encoder_block import TransformerEncoderBlock
from kerasllm.layers.feedforward import FeedForward
from kerasllm.layers.layer_norm import LayerNorm
from kerasllm.layers.local_attention import local_attention
from kerasllm.layers.lora import LORA_TARGETS, LoRA
from kerasllm.layers.masks import causal_mask, combine_masks, expand_attention_mask, local_attention_mask

__all__ = [
    "ATTENTION_TYPES",
    "Adapter",
    "Dropout",
    "FeedForward",
    "LORA_TARGETS",
    "LayerNorm",
    "LoRA",
    "MultiHeadAttention",
    "TransformerDecoderBlock",
    "TransformerEmbedding",
    "TransformerEncoderBlock",
    "causal_mask",
    "combine_masks",
    "expand_attention_mask",
    "gather_dense_grad",
    "gelu",
    "gelu_tanh",
    "get_activation",
    "local_attention",
    "local_attention_mask",
    "sinusoidal_positions",
    "update_cache",
]
