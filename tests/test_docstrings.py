"""Every public docstring Example in layers and models runs and prints what it says."""
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
    "kerasllm.data.augment",
    "kerasllm._io",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs=vars(module).copy(), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0
