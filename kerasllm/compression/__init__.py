"""kerasllm.compression."""
