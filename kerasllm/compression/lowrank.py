"""Low-rank factorisation of dense kernels by truncated SVD.

A kernel ``W`` ``[in, out]`` with singular values ``s`` becomes two smaller
projections ``down`` ``[in, r]`` and ``up`` ``[r, out]`` with
``down = U_r sqrt(s_r)`` and ``up = sqrt(s_r) V_r^T``, so ``down @ up`` is the best
rank-``r`` approximation of ``W`` (Eckart-Young); the bias stays on ``up``. The
layer costs ``r * (in + out)`` parameters instead of ``in * out``, so it is
smaller only when ``r < in * out / (in + out)``.

:func:`factorize_model` replaces the two ``Dense`` layers of every feed-forward
network in a kerasllm model by :class:`LowRankDense` layers, at a rank chosen per
kernel by retained energy (``sum(s_r^2) / sum(s^2)``), by a fraction of the
kernel's parameters, or fixed. The ranks are recorded in
``model.kerasllm_task["lowrank"]`` so :func:`kerasllm.compression.load_model`
rebuilds the same structure from a saved folder. Attention projections keep
their fused kernels.
"""
import numpy as np
import tf_keras as keras

from kerasllm.compression._layers import copy_model_attributes


@keras.saving.register_keras_serializable(package="kerasllm")
class LowRankDense(keras.layers.Layer):
    """``activation(up(down(x)))``: a dense layer factorised through a ``rank``-wide bottleneck.

    Sublayers: ``down`` (``Dense(rank, use_bias=False)``) and ``up`` (``Dense(units)``,
    with the bias).

    Args:
        units: output width.
        rank: bottleneck width.
        activation: applied after ``up`` (a Keras activation name or None).
        use_bias: whether ``up`` has a bias.

    Example:

    >>> import numpy as np
    >>> layer = LowRankDense(units=6, rank=2)
    >>> layer(np.ones((1, 3, 4), "float32")).shape
    TensorShape([1, 3, 6])
    >>> sum(int(np.prod(w.shape)) for w in layer.weights)  # 4*2 + 2*6 + 6
    26
    """

    def __init__(self, units, rank, activation=None, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        if int(rank) < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.units = int(units)
        self.rank = int(rank)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        from kerasllm.layers._utils import build_sublayer

        self.down = keras.layers.Dense(self.rank, use_bias=False, name="down", dtype=self.dtype_policy)
        build_sublayer(self.down, list(input_shape))
        self.up = keras.layers.Dense(self.units, use_bias=self.use_bias, name="up", dtype=self.dtype_policy)
        build_sublayer(self.up, list(input_shape[:-1]) + [self.rank])
        super().build(input_shape)

    def call(self, x):
        return self.activation(self.up(self.down(x)))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "rank": self.rank,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
            }
        )
        return config


def _check_fraction(value, name):
    if value is None:
        return None
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return value


def choose_rank(kernel, energy=None, param_fraction=None, rank=None):
    """The rank for ``kernel`` ``[in, out]``; give exactly one of the three criteria.

    Args:
        energy: smallest rank whose singular values keep this fraction of
            ``sum(s^2)`` (e.g. 0.9).
        param_fraction: largest rank with ``rank * (in + out) <= fraction * in * out``
            (0.5 halves the kernel's parameters).
        rank: a fixed rank (capped at ``min(in, out)``).

    Example:

    >>> choose_rank(np.eye(4, 8), param_fraction=0.5)  # 0.5 * 32 / 12
    1
    >>> choose_rank(np.diag([3.0, 1.0]), energy=0.9)  # 9 / 10 of the energy
    1
    """
    given = [v is not None for v in (energy, param_fraction, rank)]
    if sum(given) != 1:
        raise ValueError("give exactly one of energy, param_fraction or rank")
    kernel = np.asarray(kernel)
    m, n = kernel.shape
    full = min(m, n)
    if rank is not None:
        if int(rank) < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        return min(int(rank), full)
    if param_fraction is not None:
        fraction = _check_fraction(param_fraction, "param_fraction")
        return int(max(1, min(full, np.floor(fraction * m * n / (m + n)))))
    energy = _check_fraction(energy, "energy")
    s = np.linalg.svd(kernel, compute_uv=False)
    kept = np.cumsum(s**2) / max(np.sum(s**2), 1e-30)
    return int(min(full, np.searchsorted(kept, energy - 1e-12) + 1))


def svd_factors(kernel, rank):
    """``(down [in, rank], up [rank, out], retained energy)`` of the truncated SVD of ``kernel``."""
    kernel = np.asarray(kernel, np.float64)
    u, s, vt = np.linalg.svd(kernel, full_matrices=False)
    root = np.sqrt(s[:rank])
    energy = float(np.sum(s[:rank] ** 2) / max(np.sum(s**2), 1e-30))
    return (u[:, :rank] * root).astype(np.float32), (root[:, None] * vt[:rank]).astype(np.float32), energy


def factorize_dense(dense, rank):
    """A built :class:`LowRankDense` with the rank-``rank`` SVD of ``dense``'s kernel and its bias.

    Returns ``(layer, retained_energy)``.
    """
    kernel = dense.kernel.numpy()
    down, up, energy = svd_factors(kernel, rank)
    layer = _empty_lowrank(dense, rank, kernel.shape[0])
    layer.down.kernel.assign(down)
    layer.up.kernel.assign(up)
    if dense.use_bias:
        layer.up.bias.assign(dense.bias.numpy())
    return layer, energy


def _empty_lowrank(dense, rank, in_dim):
    from kerasllm.layers._utils import build_sublayer

    layer = LowRankDense(
        dense.units,
        rank,
        activation=keras.activations.serialize(dense.activation),
        use_bias=dense.use_bias,
        name=dense.name,
        dtype=dense.dtype_policy,
    )
    build_sublayer(layer, [None, None, int(in_dim)])
    return layer


_FFN_DENSES = ("intermediate", "output_dense")


def _feed_forwards(model):
    """``(key prefix, FeedForward)`` for every feed-forward network of the model's top-level layers."""
    from kerasllm.layers import FeedForward

    for layer in model.layers:
        if isinstance(layer, FeedForward):
            yield layer.name, layer
        elif isinstance(getattr(layer, "ffn", None), FeedForward):
            yield f"{layer.name}/ffn", layer.ffn


def apply_lowrank_structure(model, ranks):
    """Replace the dense layers named in ``ranks`` (``{"encoder_layer_0/ffn/intermediate": r}``) by
    freshly initialised :class:`LowRankDense` layers; used to rebuild a saved factorised model."""
    done = set()
    for prefix, ffn in _feed_forwards(model):
        for attr in _FFN_DENSES:
            key = f"{prefix}/{attr}"
            if key in ranks:
                dense = getattr(ffn, attr)
                setattr(ffn, attr, _empty_lowrank(dense, int(ranks[key]), dense.kernel.shape[0]))
                done.add(key)
    unknown = sorted(set(ranks) - done)
    if unknown:
        raise ValueError(f"low-rank entries {unknown} name no feed-forward Dense layer of model {model.name!r}")
    return model


def factorize_model(model, energy=None, param_fraction=None, rank=None):
    """A copy of ``model`` whose feed-forward ``Dense`` layers are rank-``r`` :class:`LowRankDense` pairs.

    Give exactly one of ``energy``, ``param_fraction`` or ``rank`` (see
    :func:`choose_rank`); a kernel is factorised only where that makes it smaller
    (``r * (in + out) < in * out``) unless ``rank`` asks for a fixed rank.

    Returns:
        ``(model, report)``: the new model (``kerasllm_task["lowrank"]`` holds the
        ranks) and one dict per kernel (``name``, ``shape``, ``rank``,
        ``params_before``, ``params_after``, ``energy``).

    Raises:
        ValueError: bad criteria, or the model has no feed-forward network.

    Example:

    >>> from kerasllm.models import get_preset, token_classifier
    >>> model = token_classifier(get_preset("bert-tiny", vocab_size=100), num_labels=3)
    >>> small, report = factorize_model(model, param_fraction=0.5)
    >>> [r["rank"] for r in report]  # 0.5 * 128 * 512 / 640
    [51, 51, 51, 51]
    """
    from kerasllm.compression.saving import copy_model

    criteria = [v is not None for v in (energy, param_fraction, rank)]
    if sum(criteria) != 1:
        raise ValueError("give exactly one of energy, param_fraction or rank")
    _check_fraction(energy, "energy")
    _check_fraction(param_fraction, "param_fraction")
    copy = copy_model(model)
    ranks = dict((getattr(model, "kerasllm_task", None) or {}).get("lowrank", {}))
    report = []
    for prefix, ffn in _feed_forwards(copy):
        for attr in _FFN_DENSES:
            dense = getattr(ffn, attr)
            if not isinstance(dense, keras.layers.Dense):
                continue
            kernel = dense.kernel.numpy()
            m, n = kernel.shape
            r = choose_rank(kernel, energy, param_fraction, rank)
            if rank is None and r * (m + n) >= m * n:
                continue
            low, kept = factorize_dense(dense, r)
            setattr(ffn, attr, low)
            key = f"{prefix}/{attr}"
            ranks[key] = r
            report.append(
                {"name": key, "shape": [m, n], "rank": r, "params_before": m * n, "params_after": r * (m + n), "energy": kept}
            )
    if not list(_feed_forwards(copy)):
        raise ValueError(f"model {model.name!r} has no kerasllm feed-forward network to factorise")
    copy_model_attributes(model, copy)
    copy.kerasllm_task = {**dict(getattr(model, "kerasllm_task", None) or {}), "lowrank": ranks}
    return copy, report
