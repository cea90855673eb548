"""Status service under load while a population trains; prints one JSON object.

Starts the local cluster (cluster/local_cluster.sh: Ray head, two workers, the status service, all on
loopback), trains a small synthetic population across it with `popvae train --address`, and drives a
paced load on GET /population during every other epoch (the first epoch, which starts the actors, is
left out). Reported: requests/s and latency under load, and generation time with vs without the load,
both from the same run (the coordinator's generation_seconds of each epoch). Bounded in requests and
time; everything started is stopped.

The load generator is a minimal HTTP/1.1 keep-alive client on blocking sockets (see `drive_load`).

On two cores that training already saturates (the default, 2 members), every CPU cycle the service and
the client take comes out of the generation; with `--members 1` a core is free and the comparison shows
what the service costs a population that is not CPU-bound on the service's node.

    .venv/bin/python -m benchmarks.status [--rate 300] [--members 2] [--epochs 9] [--steps-per-epoch 20]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from popvae.cluster.ports import free_base_port

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "cluster" / "local_cluster.sh"
RUN_ID = "bench"


class LoadStats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.sources: dict[str, int] = {}
        self.errors = 0
        self.seconds_on = 0.0
        self.service_cpu_on = 0.0  # the service's CPU seconds while the load was on
        self.lock = threading.Lock()


def _get(sock: socket.socket, request: bytes) -> tuple[int, bytes]:
    sock.sendall(request)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the service")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the service")
        body += chunk
    return int(head.split(b" ", 2)[1]), body


def _connection(port: int, request: bytes, tickets: queue.Queue, stats: LoadStats) -> None:
    """One keep-alive connection on a blocking socket: takes a ticket per request, so the pacing lives in one place."""
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        while (ticket := tickets.get()) is not None:
            started = time.perf_counter()
            try:
                status, body = _get(sock, request)
            except (OSError, ValueError, StopIteration):
                with stats.lock:
                    stats.errors += 1
                sock.close()
                sock = socket.create_connection(("127.0.0.1", port))
                continue
            elapsed = time.perf_counter() - started
            with stats.lock:
                stats.latencies.append(elapsed)
                stats.statuses[status] = stats.statuses.get(status, 0) + 1
                if status == 200 and ticket % 50 == 0:  # sample the source without parsing every body
                    answer = json.loads(body)
                    source = answer["source"] if answer["source"] == "live" else f"run_folder: {answer['note']}"
                    stats.sources[source] = stats.sources.get(source, 0) + 1
    finally:
        sock.close()


def drive_load(
    port: int, service_pid: int, rate: float, load_on: threading.Event, stop: threading.Event, max_requests: int, connections: int
) -> LoadStats:
    """Issue requests at `rate`/s (open loop, at most `connections` in flight) whenever `load_on` is set.

    Blocking sockets on threads rather than asyncio or httpx: the client shares two cores with the service
    and the training, and asyncio streams cost ~0.35 ms of CPU per request against ~0.04 ms here, which
    would measure the client, not the service."""
    stats = LoadStats()
    request = f"GET /population?run={RUN_ID} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    tickets: queue.Queue = queue.Queue(maxsize=connections)
    workers = [
        threading.Thread(target=_connection, args=(port, request, tickets, stats), daemon=True) for _ in range(connections)
    ]
    for w in workers:
        w.start()
    sent = 0
    while not stop.is_set() and sent < max_requests:
        if not load_on.wait(timeout=0.01):
            continue
        phase_start, phase_sent, cpu_start = time.perf_counter(), 0, _cpu_seconds(service_pid)
        while load_on.is_set() and not stop.is_set() and sent < max_requests:
            delay = phase_start + phase_sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:  # bounded wait: if every connection is stuck, keep checking `stop`
                tickets.put(sent, timeout=1.0)
            except queue.Full:
                stats.errors += 1
                continue
            sent, phase_sent = sent + 1, phase_sent + 1
        stats.seconds_on += time.perf_counter() - phase_start
        stats.service_cpu_on += _cpu_seconds(service_pid) - cpu_start
    for _ in workers:
        tickets.put(None, timeout=5.0)
    for w in workers:
        w.join(timeout=10.0)
    return stats


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _watch(
    status_path: Path,
    train: subprocess.Popen,
    load_on: threading.Event,
    stop: threading.Event,
    epochs: dict[int, tuple[float, bool]],
) -> None:
    """Record each epoch's generation_seconds and whether the load ran during it."""
    seen = 0
    while train.poll() is None and not stop.is_set():
        try:
            status = json.loads(status_path.read_text())
        except (OSError, ValueError):
            status = {"epoch": seen, "epochs": None}
        if status["epoch"] > seen:
            for epoch in range(seen + 1, status["epoch"] + 1):
                epochs[epoch] = (status["generation_seconds"], load_on.is_set())
            seen = status["epoch"]
            starting = seen + 1
            if starting % 2 == 0 and starting <= status["epochs"]:  # load on for epochs 2, 4, ... (never after the last)
                load_on.set()
            else:
                load_on.clear()
        time.sleep(0.02)
    load_on.clear()
    stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=300.0, help="target requests/s while the load is on")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--steps-per-epoch", type=int, default=20)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--max-seconds", type=float, default=480.0)
    parser.add_argument("--nice", type=int, default=0, help="CPU niceness of the status service and the load generator")
    parser.add_argument("--idle", action="store_true", help="run the status service and the load generator as SCHED_IDLE")
    args = parser.parse_args(argv)

    state = Path(tempfile.mkdtemp(prefix="pvbench-", dir="/tmp"))
    base = free_base_port(43000)
    if base is None:
        raise SystemExit("benchmarks/status.py: no free port range on loopback")
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "PYTHON": sys.executable, "POPVAE_CLUSTER_DIR": str(state)}
    env |= {"POPVAE_RAY_PORT": str(base), "POPVAE_SERVICE_PORT": str(base + 999), "POPVAE_SERVICE_NICE": str(args.nice)}
    started_at = time.monotonic()
    train: subprocess.Popen | None = None
    try:
        subprocess.run([str(SCRIPT), "start"], env=env, cwd=REPO, check=True, timeout=300, stdout=subprocess.DEVNULL)
        env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": (state / "auth_token").read_text()}
        run_dir = state / "runs" / RUN_ID
        cmd = [str(bin_dir / "popvae"), "train", "--address", f"127.0.0.1:{base}", "--dataset", "synthetic", "--quiet"]
        cmd += ["--members", str(args.members), "--epochs", str(args.epochs), "--steps-per-epoch", str(args.steps_per_epoch)]
        cmd += ["--run-dir", str(run_dir)]
        train = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        service_pid = int((state / "pids" / "service.pid").read_text())
        os.nice(args.nice)  # after spawning the trainer: only this process (the clients) is deprioritised
        if args.idle:  # every thread of the service, and this process (its threads inherit it)
            for tid in [*(int(t.name) for t in Path(f"/proc/{service_pid}/task").iterdir()), 0]:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        load_on, stop = threading.Event(), threading.Event()
        epochs: dict[int, tuple[float, bool]] = {}
        watcher = threading.Thread(target=_watch, args=(run_dir / "status.json", train, load_on, stop, epochs), daemon=True)
        deadline = threading.Timer(args.max_seconds, stop.set)
        deadline.daemon = True
        deadline.start()
        cpu_service, cpu_self = _cpu_seconds(service_pid), time.process_time()
        watcher.start()
        stats = drive_load(base + 999, service_pid, args.rate, load_on, stop, args.max_requests, args.connections)
        cpu_service, cpu_self = _cpu_seconds(service_pid) - cpu_service, time.process_time() - cpu_self
        train.wait(timeout=120)
        stop.set()
        if train.returncode != 0:
            print(json.dumps({"error": "training failed", "stderr": train.stderr.read()[-2000:]}))
            return 1
    finally:
        if train is not None and train.poll() is None:  # it outlived the time bound: nothing is left running
            train.kill()
            train.wait()
        subprocess.run([str(SCRIPT), "stop"], env=env, cwd=REPO, timeout=180, stdout=subprocess.DEVNULL)

    timed = {e: v for e, v in epochs.items() if e >= 2}
    with_load = [g for g, on in timed.values() if on]
    without = [g for g, on in timed.values() if not on]
    n = len(stats.latencies)
    rps = n / stats.seconds_on if stats.seconds_on else 0.0
    p50, p99 = (_percentile(stats.latencies, 0.5) * 1e3, _percentile(stats.latencies, 0.99) * 1e3) if n else (None, None)
    mean_on, mean_off = (statistics.mean(with_load), statistics.mean(without)) if with_load and without else (None, None)
    slowdown = 100 * (mean_on / mean_off - 1) if mean_on else None
    report: dict[str, Any] = {
        "benchmark": "status service under load while a population trains",
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "note": "shared machine; load generator, service and training on the same cores"},
        "niceness_of_service_and_load_generator": args.nice,
        "sched_idle_service_and_load_generator": args.idle,
        "population": {
            "members": args.members,
            "epochs": args.epochs,
            "steps_per_epoch": args.steps_per_epoch,
            "nodes": "head + 2 workers",
        },
        "load": {
            "endpoint": f"GET /population?run={RUN_ID}",
            "target_rate": args.rate,
            "connections": args.connections,
            "requests": n,
            "errors": stats.errors,
            "status_codes": stats.statuses,
            "sampled_sources": stats.sources,
            "seconds_under_load": round(stats.seconds_on, 2),
            "requests_per_s": round(rps, 1),
            "latency_ms": {
                "p50": p50 and round(p50, 2),
                "p90": round(_percentile(stats.latencies, 0.9) * 1e3, 2) if n else None,
                "p99": p99 and round(p99, 2),
                "max": round(max(stats.latencies) * 1e3, 2) if n else None,
            },
        },
        "generation_seconds": {
            "with_load": [round(g, 3) for g in with_load],
            "without_load": [round(g, 3) for g in without],
            "mean_with_load": mean_on and round(mean_on, 3),
            "mean_without_load": mean_off and round(mean_off, 3),
            "slowdown_percent": slowdown and round(slowdown, 2),
        },
        "cpu_seconds_during_run": {
            "status_service": round(cpu_service, 2),
            "status_service_while_load_on": round(stats.service_cpu_on, 2),
            "service_ms_per_request": round(1e3 * stats.service_cpu_on / n, 3) if n else None,
            "load_generator_and_watcher": round(cpu_self, 2),
        },
        "targets_met": {
            "requests_per_s>=300": rps >= 300,
            "p99<=100ms": p99 is not None and p99 <= 100,
            "generation_within_5pct": slowdown is not None and abs(slowdown) <= 5,
        },
        "wall_seconds": round(time.monotonic() - started_at, 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
