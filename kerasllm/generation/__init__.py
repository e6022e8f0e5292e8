"""kerasllm.generation."""
