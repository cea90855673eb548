"""Bounds checked before any work: the run folder's path, the cluster flags, and memory estimates of the dataset
and the model against this machine. No torch, no Ray; every failure is a one-line ConfigError (exit 2).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from popvae.population.config import MAX_DURATION_S, ConfigError, RunConfig

NAME_MAX = 255  # bytes in one path component (Linux NAME_MAX)
PATH_MAX = 4096  # bytes in a whole path (Linux PATH_MAX)
NOT_FOR_RUNS = (Path("/proc"), Path("/sys"), Path("/dev"))  # kernel file systems: never a run folder
MAX_NUM_CPUS = 65536
# Host memory a worker process costs beyond its tensors (torch and Ray loaded again in each worker).
WORKER_PROCESS_BYTES = 300 * 2**20
MEMORY_SHARE = 0.8  # of this machine's memory a run may plan to use
_ADDRESS = re.compile(r"^(auto|local|(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5})$")
# How long joining a cluster may take: Ray itself keeps retrying a closed port (and ignores SIGTERM meanwhile).
CONNECT_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_ENV = "POPVAE_CONNECT_TIMEOUT_S"
# How long Ray lets a driver live without its cluster's head (GCS) before it ends the process (Ray's default: 60 s).
HEAD_LOSS_ENV = "RAY_gcs_rpc_server_reconnect_timeout_s"
_GiB = 2**30


def check_run_dir_path(run_dir: Path) -> None:
    """A path the system accepts (each name <= 255 bytes, all <= 4096), outside /proc, /sys and /dev, in a place
    this process may write (probed with a temp file in the folder, or in its nearest existing parent)."""
    run_dir = Path(run_dir)
    full = os.fsencode(str(run_dir.absolute()))
    if len(full) > PATH_MAX:
        raise ConfigError(f"run folder path is {len(full)} bytes long; the limit is {PATH_MAX}")
    for part in run_dir.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise ConfigError(f"run folder name {part[:40]}... is {len(os.fsencode(part))} bytes long; "
                              f"a name may have at most {NAME_MAX}")
    from popvae.population.folder_io import file_in_the_way

    if (blocker := file_in_the_way(run_dir)) is not None:
        raise ConfigError(f"run folder {run_dir}: {blocker} is a file, not a folder")
    real = Path(os.path.realpath(run_dir))
    if any(real == root or root in real.parents for root in NOT_FOR_RUNS):
        raise ConfigError(f"run folder {run_dir} is under {real.parts[1] and '/' + real.parts[1]}, a kernel file system")
    probe_in = next((p for p in (run_dir, *run_dir.parents) if p.exists()), Path("."))
    if probe_in.stat().st_mode & 0o222 == 0:  # read-only by its mode (root may write anyway: do not)
        raise ConfigError(f"run folder {run_dir}: {probe_in} is read-only")
    try:
        fd, probe = tempfile.mkstemp(dir=probe_in, prefix=".popvae-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"run folder {run_dir}: cannot write in {probe_in}: {err.strerror or err}") from None


class ClusterUnreachable(RuntimeError):
    """No Ray cluster answered at a well-formed address within the bound (exit 1, one line naming it)."""


class ClusterRefused(ClusterUnreachable):
    """The cluster answered and refused this process's Ray token, or its lack of one (exit 1, one line naming the
    variable to set)."""


TOKEN_ENV = "RAY_AUTH_TOKEN"
_GCS_PROBE = "/ray.rpc.NodeInfoGcsService/GetClusterId"  # the cheapest GCS call: an empty request, checked for its token


def ray_token() -> str | None:
    """The token Ray would present from this environment (Ray's token authentication), or None: RAY_AUTH_MODE=disabled
    sends none; else $RAY_AUTH_TOKEN, else the file at $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    if token := os.environ.get(TOKEN_ENV, "").strip():
        return token
    try:
        return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").read_text().strip() or None
    except OSError:
        return None


def check_ray_auth(address: str) -> None:
    """Ask the cluster's GCS at HOST:PORT one cheap question with the token Ray would send: ClusterRefused, one line
    naming the variable, when it refuses it. Asked before Ray joins, because Ray's client retries a refused token
    (logging InvalidAuthToken every second) for about 20 s and then raises a bare error, and the service's live view
    retries for ever. Anything else (no answer, an older Ray) is left to Ray's own join."""
    import grpc  # Ray's own dependency, imported here only: this module is on the cheap-imports path

    token = ray_token()
    metadata = [("authorization", f"Bearer {token}")] if token else []
    try:
        with grpc.insecure_channel(address) as channel:
            call = channel.unary_unary(_GCS_PROBE, request_serializer=lambda _: b"", response_deserializer=lambda b: b)
            call(None, timeout=5.0, metadata=metadata)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.UNAUTHENTICATED:
            return
        if token is None:
            raise ClusterRefused(f"the Ray cluster at {address} requires its token (token authentication) and none is "
                                 f"set here: export RAY_AUTH_MODE=token {TOKEN_ENV}=<the cluster's token>") from None
        raise ClusterRefused(f"the Ray cluster at {address} refused this token: set {TOKEN_ENV} to the cluster's token "
                             "(it takes precedence over RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token)") from None


def ray_address(address: str | None) -> str | None:
    """The HOST:PORT a join would reach (`address`, else $RAY_ADDRESS for None and `auto`), or None for a Ray started or
    found locally."""
    if address in (None, "auto"):  # Ray reads $RAY_ADDRESS for both
        address = os.environ.get("RAY_ADDRESS") or address
    if address is None or not _ADDRESS.match(address) or address in ("auto", "local"):
        return None
    return address


def check_cluster_flags(address: str | None, num_cpus: int | None) -> None:
    """The cluster flags and $POPVAE_CONNECT_TIMEOUT_S, checked before any work: ConfigError (exit 2)."""
    if num_cpus is not None and not 1 <= num_cpus <= MAX_NUM_CPUS:
        raise ConfigError(f"--num-cpus must be in 1..{MAX_NUM_CPUS}, got {num_cpus}")
    if address is not None and address.startswith("ray://"):
        raise ConfigError(f"--address {address}: Ray Client (ray://) addresses are not supported: the driver reads the run "
                          "folder its coordinator writes, so it runs on a node of the cluster; give the cluster's GCS "
                          "address HOST:PORT there, or use ray job submit")
    if address is not None and not _ADDRESS.match(address):
        raise ConfigError(f"--address must be auto, local or HOST:PORT, got {address!r}")
    if address is not None and ":" in address and not 1 <= int(address.rsplit(":", 1)[1]) <= 65535:
        raise ConfigError(f"--address port must be in 1..65535, got {address!r}")
    if num_cpus is not None and address not in (None, "local"):
        raise ConfigError(f"--num-cpus sizes a Ray started here; it cannot be used with --address {address}, whose "
                          "cluster has its own CPUs")
    connect_timeout()


def connect_timeout() -> float:
    """Seconds joining a cluster may take: $POPVAE_CONNECT_TIMEOUT_S, else CONNECT_TIMEOUT_S."""
    text = os.environ.get(CONNECT_TIMEOUT_ENV)
    if text is None:
        return CONNECT_TIMEOUT_S
    try:
        value = float(text) if text.isascii() else -1.0
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_DURATION_S:  # also NaN
        raise ConfigError(f"${CONNECT_TIMEOUT_ENV} must be seconds in (0, {MAX_DURATION_S:g}], got {text!r}")
    return value


def check_reachable(address: str | None) -> None:
    """A cluster at HOST:PORT (`address`, else $RAY_ADDRESS) accepts a connection within `connect_timeout()` seconds
    (a node still starting gets the whole bound), else ClusterUnreachable: checked before Ray is asked to join it,
    because Ray keeps retrying a closed port. `local`, and `auto` or no address without $RAY_ADDRESS, start or
    find a local Ray. A cluster that answers is then asked whether it takes this process's token (`check_ray_auth`)."""
    address = ray_address(address)
    if address is None:
        return
    host, port = address.rsplit(":", 1)
    bound = connect_timeout()
    deadline = time.monotonic() + bound
    while True:
        try:
            wait = max(0.1, min(5.0, deadline - time.monotonic()))
            socket.create_connection((host.strip("[]"), int(port)), timeout=wait).close()
            break
        except OSError as err:
            why = err.strerror or type(err).__name__
        if time.monotonic() + 0.5 > deadline:
            raise ClusterUnreachable(f"no Ray cluster answered at {address} within {bound:g} s ({why.lower()}); check the "
                                     f"address, or set ${CONNECT_TIMEOUT_ENV} to wait longer")
        time.sleep(0.5)
    check_ray_auth(address)


def head_loss_bound() -> float:
    """Seconds Ray keeps a driver alive after its cluster's head stopped answering ($RAY_gcs_rpc_server_reconnect_timeout_s,
    else Ray's 60)."""
    try:
        return max(1.0, float(os.environ.get(HEAD_LOSS_ENV, "60")))
    except ValueError:
        return 60.0


def watch_head(address: str, warn: Callable[[float], None], every: float = 1.0) -> None:
    """From a daemon thread, call `warn(bound)` once each time the head at HOST:PORT has taken no connection for half
    of `head_loss_bound()` (at most 10 s). Ray ends a driver whose head stays away with a line of its own that says
    nothing of the run; `warn` says, while there is still time, what the run keeps and how to go on."""
    host, port = address.rsplit(":", 1)
    after = min(10.0, head_loss_bound() / 2)

    def watch() -> None:
        down_since, warned = None, False
        while True:
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=every).close()
                down_since, warned = None, False
            except OSError:
                down_since = down_since or time.monotonic()
                if not warned and time.monotonic() - down_since >= after:
                    warn(head_loss_bound())
                    warned = True
            time.sleep(every)

    threading.Thread(target=watch, name="watch-ray-head", daemon=True).start()


def machine_memory() -> int:
    """Bytes of physical memory on this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def model_parameters(cfg: RunConfig) -> int:
    """The GS-VAE's parameter count from its config (k4 convolutions down and up, the latent heads), without torch."""
    m = cfg.model
    chans = (m.in_channels, *m.widths)
    convs = sum(16 * a * b + b for a, b in zip(chans, chans[1:]))
    side = m.image_size // 2 ** len(m.widths)
    flat = m.widths[-1] * side * side
    latent = m.z1_vars * m.z1_categories + m.z2_vars * m.z2_categories
    return 2 * convs + 2 * (flat * latent + latent) + latent * latent


def worker_processes(cfg: RunConfig) -> int:
    """Worker processes the run starts on this machine: one per pack (`pack_size` K: ceil(n / K); auto: one pack)."""
    return 1 if cfg.pack_size == "auto" else -(-cfg.members // cfg.pack_size)


def memory_estimate(cfg: RunConfig) -> dict[str, int]:
    """Bytes a run needs on this machine: the dataset (as loaded; a synthetic set is drawn in float64 first), each
    member (weights, gradients, two Adam moments, a batch's activations) and each worker process that hosts them."""
    m = cfg.model
    pixels = m.in_channels * m.image_size * m.image_size
    images = cfg.synthetic_size * 5 // 4 if cfg.dataset == "synthetic" else 80_000
    dataset = images * pixels * (8 + 3)  # float64 drawing (synthetic) or parsing, then uint8 copies
    sides = [m.image_size // 2 ** (i + 1) for i in range(len(m.widths))]
    batch = min(cfg.batch_size, images)  # a batch never holds more images than the split
    activations = batch * sum(w * s * s for w, s in zip(m.widths, sides)) * 4 * 2 * 3
    member = model_parameters(cfg) * 4 * 4 + activations
    processes = worker_processes(cfg) * WORKER_PROCESS_BYTES
    return {"dataset": dataset, "member": member + WORKER_PROCESS_BYTES,
            "total": dataset + cfg.members * member + processes}


def check_memory(cfg: RunConfig) -> None:
    """The dataset and the members must fit this machine's memory (a wrong number fails here, not in an
    allocation minutes after Ray started)."""
    need, have = memory_estimate(cfg), int(machine_memory() * MEMORY_SHARE)
    for part, what in (("dataset", f"the dataset ({cfg.dataset}, synthetic_size {cfg.synthetic_size})"),
                       ("member", f"one member (model widths {list(cfg.model.widths)}, batch_size {cfg.batch_size})"),
                       ("total", f"{cfg.members} members and the dataset")):
        if need[part] > have:
            raise ConfigError(f"{what} would need about {need[part] / _GiB:.1f} GiB; this machine has "
                              f"{machine_memory() / _GiB:.1f} GiB (at most {MEMORY_SHARE:.0%} planned)")
