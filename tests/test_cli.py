"""The CLI skeleton: --version, info, presets, a light import."""
import subprocess
import sys

from typer.testing import CliRunner

import kerasllm
from kerasllm.cli.main import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"kerasllm {kerasllm.__version__}"


def test_presets_table_lists_published_counts():
    result = runner.invoke(app, ["presets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "109,482,240" in result.output  # bert-base
    assert "124,439,808" in result.output  # gpt2
    for name in kerasllm.models.PRESETS:
        assert name in result.output


def test_info_lists_tensorflow_and_xla():
    import tensorflow as tf

    result = runner.invoke(app, ["info"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert tf.__version__ in result.output
    assert "XLA:" in result.output


def test_cli_import_and_help_do_not_load_tensorflow():
    code = (
        "import sys; from typer.testing import CliRunner; from kerasllm.cli.main import app; "
        "r = CliRunner().invoke(app, ['finetune', 'classify', '--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('tensorflow', 'tf_keras') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
