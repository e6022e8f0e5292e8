"""The kerasllm command line (installed as kerasllm.cli)."""
