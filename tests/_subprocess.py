"""Run a test script in a fresh interpreter (logical devices must be set before TF starts)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_result_script(script, timeout=600):
    """Run ``script`` with the repository on ``PYTHONPATH``; return ``(result, stdout)``.

    The script prints one line ``RESULT <json>``; the test fails with the script's
    stderr when it exits non-zero or prints no such line.
    """
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and line, done.stderr[-3000:]
    return json.loads(line[0][len("RESULT ") :]), done.stdout
