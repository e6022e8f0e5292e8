"""kerasllm.checkpoints."""
