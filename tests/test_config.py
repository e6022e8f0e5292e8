"""Config validation: one ValueError naming the field and what is allowed."""
import pytest

from kerasllm.models import PRESETS, TransformerConfig, get_preset


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"hidden_size": 100, "num_heads": 12}, r"hidden_size=100 .*divisible by num_heads=12"),
        ({"dropout": -0.1}, r"dropout=-0.1 .*\[0, 1\)"),
        ({"attention_dropout": 1.0}, r"attention_dropout=1.0 .*\[0, 1\)"),
        ({"activation": "swish"}, r"activation='swish' .*allowed values: \['gelu', 'gelu_tanh', 'relu'\]"),
        ({"model_type": "rnn"}, r"model_type='rnn' .*allowed values"),
        ({"num_layers": 0}, r"num_layers=0 .*positive integer"),
        ({"position_embedding": "rotary"}, r"position_embedding='rotary' .*allowed values"),
    ],
)
def test_bad_config_names_field_and_allowed_values(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        TransformerConfig(**changes)


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match=r"unknown preset 'bert-huge'; allowed values: \[.*'bert-tiny'"):
        get_preset("bert-huge")


def test_unknown_override_field():
    with pytest.raises(ValueError, match=r"unknown TransformerConfig field\(s\) \['hidden'\]"):
        get_preset("bert-tiny", hidden=3)


def test_presets_shapes():
    expected = {
        "bert-tiny": (2, 128), "bert-mini": (4, 256), "bert-small": (4, 512), "bert-medium": (8, 512),
        "bert-base": (12, 768), "bert-large": (24, 1024), "gpt2": (12, 768), "gpt2-medium": (24, 1024),
    }
    for name, (layers, hidden) in expected.items():
        assert (PRESETS[name].num_layers, PRESETS[name].hidden_size) == (layers, hidden)


def test_config_json_round_trip(tmp_path):
    config = get_preset("gpt-tiny", vocab_size=4000)
    config.save(tmp_path / "config.json")
    assert TransformerConfig.load(tmp_path / "config.json") == config
