"""Model configs, presets and builders: BERT, GPT and encoder-decoder, with task heads and PEFT."""
from kerasllm.models.bert import bert_encoder, bert_pretraining, sequence_classifier, token_classifier
from kerasllm.models.config import PRESET_DESCRIPTIONS, PRESETS, TransformerConfig, get_preset
from kerasllm.models.encoder_decoder import encoder_decoder
from kerasllm.models.gpt import call_with_cache, gpt_decoder, init_cache
from kerasllm.models.peft import describe_peft, freeze, merge_peft, parameter_counts, with_peft
from kerasllm.models.saving import build_model, load_pretrained, save_pretrained
from kerasllm.models.summary import summary
from kerasllm.checkpoints.auto import from_pretrained  # noqa: E402  (after saving: it imports it)

__all__ = [
    "PRESETS",
    "PRESET_DESCRIPTIONS",
    "TransformerConfig",
    "bert_encoder",
    "bert_pretraining",
    "build_model",
    "call_with_cache",
    "describe_peft",
    "encoder_decoder",
    "freeze",
    "from_pretrained",
    "get_preset",
    "gpt_decoder",
    "init_cache",
    "load_pretrained",
    "merge_peft",
    "parameter_counts",
    "save_pretrained",
    "sequence_classifier",
    "summary",
    "token_classifier",
    "with_peft",
]
