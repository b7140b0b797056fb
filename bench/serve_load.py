"""Request latency of serve.py under load: N clients (openpi_client's WebsocketClientPolicy, one thread each) send
requests back to back, all at once; per client count, the p50 / p99 round trip, the server's batch sizes and call
times, and the requests answered per second.

  python bench/serve_load.py --serve checkpoint=policies/pushcube_pi05 [device=cuda compile=true] --clients 1 4 16
  python bench/serve_load.py --tiny --clients 1 4 16          # a random-weight pi05_tiny (the serve tests' policy)
  python bench/serve_load.py --random pi05 --set device=cuda precision=bf16 compile=true   # full-size Pi0.5
  python bench/serve_load.py --url ws://host:8000 --clients 1 4 16   # a server already running

--serve / --tiny / --random start `serve.py` in a subprocess (its own interpreter: the clients' threads do not share its GIL) on
a free port and stop it at the end. Requests are random images and states of the shapes the server's metadata
announces. Each client sends `--warmup` requests first (not counted), then `--requests` timed ones. A compiled
server (`device=cuda compile=true`) has built the graphs of every batch size it runs at before it listens. --out
writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from openpi_client.websocket_client_policy import WebsocketClientPolicy

REPO = Path(__file__).resolve().parents[1]


def start_server(overrides: list[str], timeout_s: float = 600) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, str(REPO / "serve.py"), "host=127.0.0.1", "port=0", *overrides]
    proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    deadline, seen = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if match := re.search(r"serving on (ws://127\.0\.0\.1:\d+)", line):
            return proc, match.group(1)
    proc.kill()
    raise RuntimeError("serve.py did not start:\n" + "".join(seen[-20:]))


def request_from(metadata: dict, rng: np.random.Generator) -> dict:
    """Random values of the announced observation's keys and shapes (the prompt left to the server's default)."""
    obs = {}
    for key, spec in metadata["observation"].items():
        if spec["dtype"] == "uint8":
            obs[key] = rng.integers(0, 256, spec["shape"], dtype=np.uint8)
        elif spec["dtype"] == "float32":
            obs[key] = rng.normal(size=spec["shape"]).astype(np.float32)
    return obs


def run_clients(url: str, num_clients: int, num_requests: int, warmup: int) -> dict:
    policies = [WebsocketClientPolicy(url) for _ in range(num_clients)]
    started: list[float] = []
    start = threading.Barrier(num_clients, action=lambda: started.append(time.perf_counter()))
    records: list[list[tuple[float, dict]]] = [[] for _ in range(num_clients)]
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            rng = np.random.default_rng(i)
            obs = request_from(policies[i].get_server_metadata(), rng)
            for _ in range(warmup):
                policies[i].infer(obs)
            start.wait(timeout=600)
            for _ in range(num_requests):
                t0 = time.perf_counter()
                reply = policies[i].infer(obs)
                records[i].append((time.perf_counter() - t0, reply["server_timing"]))
        except BaseException as e:  # noqa: BLE001 (reported after the others finish)
            errors.append(e)
            start.abort()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(num_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    wall = time.perf_counter() - started[0]  # from the moment every client was warm
    latencies = np.array([ms for r in records for ms, _ in r]) * 1000
    timings = [t for r in records for _, t in r]
    return {
        "clients": num_clients, "requests": len(latencies),
        "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
        "max_ms": float(latencies.max()),
        "mean_batch": float(np.mean([t["batch_size"] for t in timings])),
        "mean_call_ms": float(np.mean([t["infer_ms"] for t in timings])),
        "mean_queue_ms": float(np.mean([t["queue_ms"] for t in timings])),
        "requests_per_s": len(latencies) / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--serve", nargs="+", metavar="KEY=VALUE", help="start serve.py with these overrides")
    where.add_argument("--tiny", action="store_true", help="start serve.py on a random-weight pi05_tiny policy")
    where.add_argument("--random", metavar="MODEL",
                       help="start serve.py on a random-weight policy of this model config (PushCube's observation)")
    where.add_argument("--url", help="a running server, e.g. ws://127.0.0.1:8000")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=50, help="timed requests per client")
    ap.add_argument("--warmup", type=int, default=3, help="untimed requests per client first")
    ap.add_argument("--out", type=Path, help="write the rows as JSON")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="more serve.py overrides with --tiny / --random (device=cuda compile=true ...)")
    args = ap.parse_args()

    proc, tmp = None, None
    url = args.url
    if args.tiny or args.random:
        sys.path.insert(0, str(REPO))
        from tests.serve.tiny_policy import write_tiny_policy

        model = args.random or "pi05_tiny"
        tmp = tempfile.TemporaryDirectory()
        args.serve = [f"checkpoint={write_tiny_policy(Path(tmp.name) / model, model=model)}", *args.set]
    if args.serve:
        proc, url = start_server(args.serve)
    try:
        rows = []
        for n in args.clients:
            rows.append(run_clients(url, n, args.requests, args.warmup))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        if tmp is not None:
            tmp.cleanup()
    print("\n| clients | requests | p50 ms | p99 ms | mean batch | mean call ms | mean queue ms | requests/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch']:.1f} | "
              f"{r['mean_call_ms']:.1f} | {r['mean_queue_ms']:.1f} | {r['requests_per_s']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
