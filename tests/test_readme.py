"""README's two set-up commands stay true: CI runs both, in the README's order, in one clone."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = [b.strip() for b in _bash_blocks(readme)]
    test_commands = [b for b in blocks if "pytest" in b]
    assert len(test_commands) == 1, "README must hold exactly one test command"
    assert test_commands[0] in ci.splitlines()


def test_readme_main_job_command_runs_finetune_ner():
    blocks = [b.strip() for b in _bash_blocks((ROOT / "README.md").read_text())]
    assert any(b.endswith("kerasllm finetune ner") and "pip install -e ." in b for b in blocks)


def test_ci_runs_the_main_job_command_then_the_test_command():
    # In one virtualenv, in this order: command 2 reinstalls over command 1's install.
    blocks = [b.strip() for b in _bash_blocks((ROOT / "README.md").read_text())]
    main_job = next(b for b in blocks if b.endswith("kerasllm finetune ner"))
    test_command = next(b for b in blocks if "pytest" in b)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert main_job in ci_lines and test_command in ci_lines
    assert ci_lines.index(main_job) < ci_lines.index(test_command)
    between = ci_lines[ci_lines.index(main_job) + 1 : ci_lines.index(test_command)]
    assert not any("rm -rf .venv" in line for line in between)
