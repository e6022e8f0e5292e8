"""Choose a ``tf.distribute`` strategy by name.

Build the model, the optimizer and compile inside the returned strategy's
``scope()``; ``model.fit`` then splits each global batch over the replicas.

Multi-worker training reads the cluster from ``TF_CONFIG``;
:func:`configure_cluster` writes it from a host list and this process's index
(``--worker-hosts`` / ``--task-index``). On a TPU, :func:`accelerator_settings`
gives the defaults a TPU needs (bfloat16, several steps per execution, static
shapes). See docs/distributed.md for the commands on each kind of machine.

This module is named ``distribution`` rather than ``strategy`` so that the
function :func:`strategy` does not shadow its own module in
``kerasllm.training``.
"""
import collections
import json
import logging
import os
import re
import socket
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


def _read_tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}): {raw[:200]!r}") from None


def _tf_config_workers():
    config = _read_tf_config() or {}
    cluster = config.get("cluster", {})
    return sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))


# host:port, host:port or [IPv6]:port
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def cluster_config(worker_hosts, task_index):
    """The ``TF_CONFIG`` dict of a cluster of workers, as seen by worker ``task_index``.

    Worker 0 is the chief: it writes the checkpoints, the TensorBoard logs and
    the exports; the others only train.

    Args:
        worker_hosts: ``"host:port,host:port"`` (or a list): every worker's
            address, the same list in the same order on every worker.
        task_index: this process's position in ``worker_hosts``.

    Raises:
        ValueError: naming the bad entry, or the index when it is out of range.

    Example:

    >>> cluster_config("10.0.0.1:2222,10.0.0.2:2222", 1)
    {'cluster': {'worker': ['10.0.0.1:2222', '10.0.0.2:2222']}, 'task': {'type': 'worker', 'index': 1}}
    """
    from kerasllm.training.finetune_config import split_list

    hosts = split_list(worker_hosts) or []
    if not hosts:
        raise ValueError("--worker-hosts is empty: give every worker's host:port, comma-separated")
    for host in hosts:
        match = _HOST_PORT.match(host)
        if not match or not 0 < int(match.group(2)) < 65536:
            raise ValueError(f"--worker-hosts: {host!r} is not host:port (e.g. 10.0.0.2:2222)")
        if hosts.count(host) > 1:
            raise ValueError(f"--worker-hosts lists {host} more than once")
    if task_index is None:
        raise ValueError("--worker-hosts needs --task-index: 0 on the chief, 1 to N-1 on the other workers")
    if isinstance(task_index, bool) or not isinstance(task_index, int) or not 0 <= task_index < len(hosts):
        raise ValueError(
            f"--task-index {task_index} is out of range for {len(hosts)} --worker-hosts (0 to {len(hosts) - 1})"
        )
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": task_index}}


def local_worker_hosts(n):
    """``n`` addresses ``127.0.0.1:PORT`` on ports free right now: a cluster on this machine.

    For tests and benchmarks that start several worker processes locally
    (another program may still take a port before the workers bind it).

    Example:

    >>> hosts = local_worker_hosts(2)
    >>> len(set(hosts)), all(h.startswith("127.0.0.1:") for h in hosts)
    (2, True)
    """
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()


def configure_cluster(worker_hosts=None, task_index=None):
    """Set ``TF_CONFIG`` from ``worker_hosts`` and ``task_index`` unless it is already set.

    Call it before creating the strategy (:func:`strategy` does it for its
    ``worker_hosts``/``task_index`` arguments). An existing ``TF_CONFIG`` that
    says the same is accepted; one that says something else is an error rather
    than silently overridden.

    Args:
        worker_hosts: see :func:`cluster_config`; None leaves ``TF_CONFIG`` alone.
        task_index: see :func:`cluster_config`.

    Returns:
        The cluster configuration in force (a dict), or None when there is none.

    Example:

    >>> import os
    >>> saved = os.environ.pop("TF_CONFIG", None)  # the example starts with no cluster
    >>> configure_cluster()  # nothing given, no TF_CONFIG: single worker
    >>> configure_cluster("127.0.0.1:2222,127.0.0.1:2223", 0)["task"]
    {'type': 'worker', 'index': 0}
    >>> os.environ["TF_CONFIG"]
    '{"cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}, "task": {"type": "worker", "index": 0}}'
    >>> del os.environ["TF_CONFIG"]
    >>> if saved is not None:
    ...     os.environ["TF_CONFIG"] = saved
    """
    existing = _read_tf_config()
    if worker_hosts is None:
        if task_index is None:
            return existing
        if existing is not None and existing.get("task", {}).get("index") == task_index:
            return existing
        raise ValueError(
            f"--task-index {task_index} needs --worker-hosts (or a TF_CONFIG whose task index is {task_index})"
        )
    wanted = cluster_config(worker_hosts, task_index)
    if existing is not None:
        if existing.get("cluster") == wanted["cluster"] and existing.get("task") == wanted["task"]:
            return existing
        raise ValueError(
            f"TF_CONFIG is already set to {json.dumps(existing)[:300]}, which differs from --worker-hosts/--task-index "
            f"({json.dumps(wanted)}); unset TF_CONFIG or drop those options"
        )
    os.environ["TF_CONFIG"] = json.dumps(wanted)
    return wanted


def is_tpu(dist):
    """True when ``dist`` is a ``TPUStrategy``.

    Example:

    >>> is_tpu(strategy("default", verbose=False))
    False
    """
    return isinstance(dist, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))


# Training steps run per call from the host on a TPU (each call has a fixed host overhead).
TPU_STEPS_PER_EXECUTION = 32

AcceleratorSettings = collections.namedtuple(
    "AcceleratorSettings", ["mixed_precision", "steps_per_execution", "static_shapes", "fuse_elementwise"],
    defaults=(False,),
)


def accelerator_settings(
    dist, mixed_precision="auto", steps_per_execution=0, static_shapes=False, steps_per_epoch=None,
    xla=False, fuse_elementwise="off", width=None,
):
    """Resolve the speed settings of a run on ``dist``.

    On a TPU: ``mixed_precision="auto"`` becomes ``"bfloat16"`` (the TPU's
    matrix unit type; no loss scaling needed), ``steps_per_execution=0``
    becomes :data:`TPU_STEPS_PER_EXECUTION` (at most ``steps_per_epoch``), and
    ``static_shapes`` is turned on (XLA compiles one TPU program per input
    shape, so every batch must have the same one). On a CPU with AMX (and no
    GPU), ``"auto"`` is ``"bfloat16"`` too unless ``xla`` (XLA's CPU products do
    not use AMX), for a model of hidden size ``width`` >= 256 (or unknown), and
    ``fuse_elementwise="auto"`` is on with it (see
    :mod:`kerasllm.training.fusion`). Elsewhere ``"auto"`` is ``"none"`` and
    fusion off, 0 is 1 and ``static_shapes`` stays as given. Explicit values
    are kept.

    Args:
        dist: the strategy the run trains under.
        mixed_precision: ``"auto"``, ``"none"``, ``"float16"`` or ``"bfloat16"``.
        steps_per_execution: steps per ``tf.function`` call; 0 for the default.
        static_shapes: pad every batch to one shape.
        steps_per_epoch: caps the TPU's default ``steps_per_execution``.
        xla: the train step is compiled whole with XLA.
        fuse_elementwise: ``"auto"``, ``"on"`` or ``"off"``.
        width: the model's hidden size, if known: "auto" picks bfloat16 and fusion
            on an AMX CPU only from :data:`kerasllm.training.fusion.MIN_WIDTH` up.

    Returns:
        An ``AcceleratorSettings(mixed_precision, steps_per_execution, static_shapes, fuse_elementwise)``.

    Example:

    >>> accelerator_settings(strategy("default", verbose=False), mixed_precision="none")
    AcceleratorSettings(mixed_precision='none', steps_per_execution=1, static_shapes=False, fuse_elementwise=False)
    """
    from kerasllm.training.fusion import resolve_fusion, resolve_precision

    tpu = is_tpu(dist)
    mixed_precision = resolve_precision(mixed_precision, tpu=tpu, xla=xla, width=width)
    fuse = resolve_fusion(fuse_elementwise, mixed_precision, tpu=tpu, xla=xla, width=width)
    if not steps_per_execution:
        steps_per_execution = TPU_STEPS_PER_EXECUTION if tpu else 1
        if steps_per_epoch:
            steps_per_execution = max(1, min(steps_per_execution, int(steps_per_epoch)))
    if steps_per_execution < 1:
        raise ValueError(f"steps_per_execution must be >= 1 (or 0 for the default), got {steps_per_execution}")
    return AcceleratorSettings(mixed_precision, int(steps_per_execution), bool(static_shapes or tpu), fuse)


def strategy(
    name="auto", devices=None, tpu=None, tpu_timeout=30.0, verbose=True, worker_hosts=None, task_index=None
):
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
        worker_hosts, task_index: for ``"multiworker"`` (or ``"auto"``): the
            cluster's ``host:port`` list and this worker's index, written to
            ``TF_CONFIG`` by :func:`configure_cluster` when it is not set.

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
    if (worker_hosts is not None or task_index is not None) and name not in ("multiworker", "auto"):
        raise ValueError(f"worker_hosts/task_index only apply to the 'multiworker' strategy, not {name!r}")
    configure_cluster(worker_hosts, task_index)
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
    resolver = getattr(result, "cluster_resolver", None)
    if chosen == "multiworker" and resolver is not None and resolver.task_type is not None:
        role = "chief" if result.extended.should_checkpoint else "not the chief: writes no checkpoint, log or export"
        message += f"; this process is {resolver.task_type} {resolver.task_id} ({role})"
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
