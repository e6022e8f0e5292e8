"""Every public docstring Example in the listed modules runs and prints what it says."""
import doctest
import importlib

import pytest

MODULES = [
    "kerasllm.layers.attention",
    "kerasllm.layers.embeddings",
    "kerasllm.layers.feedforward",
    "kerasllm.layers.encoder_block",
    "kerasllm.layers.decoder_block",
    "kerasllm.models.config",
    "kerasllm.models.bert",
    "kerasllm.models.gpt",
    "kerasllm.models.encoder_decoder",
    "kerasllm.models.heads",
    "kerasllm.models.summary",
    "kerasllm.layers.lora",
    "kerasllm.layers.adapter",
    "kerasllm.models.peft",
    "kerasllm.training.optimizers",
    "kerasllm.training.seed",
    "kerasllm.generation.config",
    "kerasllm.compression.lowrank",
    "kerasllm.data.conll",
    "kerasllm.evaluation.ner",
    "kerasllm.data.augment",
    "kerasllm._io",
    "kerasllm.data.corpus",
    "kerasllm.data.pretraining",
    "kerasllm.training.pretrain",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs=vars(module).copy(), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0
