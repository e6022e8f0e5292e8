"""Choose a ``tf.distribute`` strategy by name.

Build the model, the optimizer and compile inside the returned strategy's
``scope()``; ``model.fit`` then splits each global batch over the replicas.

This module is named ``distribution`` rather than ``strategy`` so that the
function :func:`strategy` does not shadow its own module in
``kerasllm.training``.
"""
import json
import logging
import os
import threading

import tensorflow as tf

logger = logging.getLogger("kerasllm.training")

NAMES = ("auto", "default", "mirrored", "multiworker", "tpu")
# Environment variables set on Cloud TPU VMs, Colab and GKE when a TPU is attached.
_TPU_ENV = ("TPU_NAME", "COLAB_TPU_ADDR", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_ACCELERATOR_TYPE")


def _tpu_hint():
    """Where a TPU could come from without any network call, or None."""
    for key in _TPU_ENV:
        if os.environ.get(key):
            return f"${key}={os.environ[key]}"
    if os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0"):
        return "local TPU devices (/dev/accel0 or /dev/vfio/0)"
    return None


def _run_with_timeout(fn, timeout, what):
    """Run ``fn()`` in a daemon thread; raise ``RuntimeError`` if it takes longer than ``timeout`` s."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as err:  # re-raised in the caller's thread
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True, name="kerasllm-tpu-probe")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise RuntimeError(f"{what} did not answer within {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def _tpu_strategy(tpu, timeout):
    looked_for = f"tpu={tpu!r}" if tpu else (_tpu_hint() or "$TPU_NAME (unset) and local TPU devices (none)")

    def connect():
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu not in (None, "", "local"):
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return resolver

    try:
        resolver = _run_with_timeout(connect, timeout, f"the TPU ({looked_for})")
    except RuntimeError as err:
        raise RuntimeError(f"no TPU reachable: {err}") from None
    except Exception as err:  # ValueError, NotFoundError, URLError, ...
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RuntimeError(
            f"no TPU found: looked for {looked_for} with TPUClusterResolver and got "
            f"{type(err).__name__}: {first_line}. Pass --tpu NAME (or grpc://host:port), "
            "or choose another strategy (default, mirrored, multiworker)."
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def _tf_config_workers():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}): {raw[:200]!r}") from None
    cluster = config.get("cluster", {})
    return sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))


def strategy(name="auto", devices=None, tpu=None, tpu_timeout=30.0, verbose=True):
    """Return a ``tf.distribute.Strategy`` and log which one and how many replicas.

    Args:
        name: one of

            - ``"default"``: ``tf.distribute.get_strategy()`` (one device);
            - ``"mirrored"``: ``tf.distribute.MirroredStrategy(devices)``, all
              local GPUs (or the CPU) when ``devices`` is None;
            - ``"multiworker"``: ``MultiWorkerMirroredStrategy``; the cluster
              comes from the ``TF_CONFIG`` environment variable;
            - ``"tpu"``: ``TPUStrategy`` on ``TPUClusterResolver(tpu)``; raises
              ``RuntimeError`` naming what it looked for when there is no TPU;
            - ``"auto"``: a TPU when one is advertised (``tpu`` given,
              ``$TPU_NAME``, Colab/GKE variables or local TPU devices); else
              ``multiworker`` when ``TF_CONFIG`` lists several workers; else
              ``mirrored`` over several GPUs (or the given ``devices``); else
              ``default``. An advertised TPU that does not answer within
              ``tpu_timeout`` is skipped with a warning (unless ``tpu`` was
              given, then it raises).
        devices: device strings for ``"mirrored"``, e.g. ``["/gpu:0", "/gpu:1"]``.
        tpu: TPU name or ``grpc://`` address (``"local"`` on a TPU VM).
        tpu_timeout: seconds to wait for a TPU to answer.
        verbose: also print the choice (it is always logged at INFO level).

    Example:

    >>> strategy("default", verbose=False).num_replicas_in_sync
    1
    """
    if name not in NAMES:
        raise ValueError(f"unknown strategy {name!r}; allowed values: {list(NAMES)}")
    if devices is not None and name not in ("mirrored", "auto"):
        raise ValueError(f"devices={devices!r} only applies to the 'mirrored' strategy, not {name!r}")
    if tpu is not None and name not in ("tpu", "auto"):
        raise ValueError(f"tpu={tpu!r} only applies to the 'tpu' strategy, not {name!r}")
    chosen, result = name, None
    if name == "auto":
        chosen = _auto_choice(devices)
        if tpu or _tpu_hint():
            try:
                chosen, result = "tpu", _tpu_strategy(tpu, tpu_timeout)
            except RuntimeError as err:
                if tpu:  # asked for by name: do not silently train elsewhere
                    raise
                logger.warning("auto strategy: %s; using %s instead", err, chosen)
    if result is None:
        if chosen == "default":
            result = tf.distribute.get_strategy()
        elif chosen == "mirrored":
            result = tf.distribute.MirroredStrategy(devices=devices)
        elif chosen == "multiworker":
            if not _tf_config_workers():
                logger.warning("multiworker strategy without TF_CONFIG: running as a single worker")
            result = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            result = _tpu_strategy(tpu, tpu_timeout)
    message = (
        f"kerasllm: strategy {chosen}"
        + (" (auto)" if name == "auto" else "")
        + f" -> {type(result).__name__} with {result.num_replicas_in_sync} replica(s)"
    )
    logger.info(message)
    if verbose:
        print(message, flush=True)
    return result


def _auto_choice(devices):
    """The non-TPU choice of ``"auto"``."""
    if _tf_config_workers() > 1:
        return "multiworker"
    if devices is not None or len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "default"
