"""Parameter and FLOP counts computed from a config (no model is built)."""


def _block_params(d, f, cross=False):
    attention = 4 * d * d + 4 * d  # fused QKV (3d^2 + 3d) + output (d^2 + d)
    ffn = 2 * d * f + f + d
    norms = 4 * d
    if cross:
        attention += 4 * d * d + 4 * d
        norms += 2 * d
    return attention + ffn + norms


def summary(config, seq_len=128):
    """Count parameters and FLOPs per token of the backbone described by ``config``.

    FLOPs count a multiply-add as 2. Per token, the forward pass costs twice the
    matmul parameters it touches, plus ``4 * seq_len * hidden`` per attention layer
    (scores and weighted sum over ``seq_len`` keys), plus the tied LM head
    (``2 * vocab * hidden``) for GPT and encoder-decoder models. Training is
    counted as 3x the forward pass.

    Returns:
        dict with ``parameters`` (BERT: embeddings + encoder + pooler; GPT and
        encoder-decoder: with the tied LM head, which adds none),
        ``embedding_parameters``, ``flops_per_token`` (forward) and
        ``train_flops_per_token``.

    Example:

    >>> from kerasllm.models import get_preset
    >>> summary(get_preset("bert-base"))["parameters"]
    109482240
    """
    d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    embedding = v * d
    if config.position_embedding == "learned":
        embedding += config.max_position * d
    embedding += config.type_vocab_size * d
    if not config.normalize_first:
        embedding += 2 * d  # embedding layer norm

    matmul_per_token = 0
    params = embedding
    attention_layers = 0
    if config.model_type in ("bert", "gpt"):
        params += config.num_layers * _block_params(d, f)
        matmul_per_token += config.num_layers * (4 * d * d + 2 * d * f)
        attention_layers = config.num_layers
        if config.model_type == "bert" and config.use_pooler:
            params += d * d + d
        if config.normalize_first:
            params += 2 * d
        if config.model_type == "gpt":
            matmul_per_token += v * d
    else:
        params += config.num_layers * _block_params(d, f)
        params += config.num_decoder_layers * _block_params(d, f, cross=True)
        params += 4 * d if config.normalize_first else 0
        # one encoder token + one decoder token (cross K/V projected per source token)
        matmul_per_token += config.num_layers * (4 * d * d + 2 * d * f)
        matmul_per_token += config.num_decoder_layers * (8 * d * d + 2 * d * f) + v * d
        attention_layers = config.num_layers + 2 * config.num_decoder_layers
    flops = 2 * matmul_per_token + attention_layers * 4 * seq_len * d
    return {
        "parameters": params,
        "embedding_parameters": embedding,
        "non_embedding_parameters": params - embedding,
        "flops_per_token": flops,
        "train_flops_per_token": 3 * flops,
        "seq_len": seq_len,
    }
