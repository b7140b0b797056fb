"""serve.py, the Hydra app: the checkpoint's recorded recipe, one inference from the openpi client, a clean stop on
SIGTERM, and bad settings refused in one line."""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from tests.serve.conftest import IMAGE_SIZE

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def serve_cmd(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "serve.py"), *args]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_serve_cli_serves_the_recorded_recipe_and_stops_on_sigterm(tiny_policy_dir, tmp_path):
    proc = subprocess.Popen(serve_cmd(f"checkpoint={tiny_policy_dir}", "host=127.0.0.1", "port=0"), cwd=tmp_path,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        port, seen = None, []
        while port is None:
            line = lines.get(timeout=240)
            seen.append(line)
            if match := re.search(r"serving on ws://127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
        policy = WebsocketClientPolicy("127.0.0.1", port)
        assert policy.get_server_metadata()["task"] == "pushcube"  # from the checkpoint, not conf/serve.yaml's
        obs = {"observation/image": np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
               "observation/state": np.zeros(8, np.float32)}
        assert policy.infer(obs)["actions"].shape == (10, 7)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, "".join(seen)
    finally:
        proc.kill()
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("override, message", [
    ("port=70000", "port=70000: expected 0 (any free port) to 65535"),
    ("batch_size=4", "batch_size=4: batch_size is not read by serve.py"),
    ("latency.rtc=true", "Could not override 'latency.rtc'"),
])
def test_serve_cli_refuses_bad_settings_in_one_line(tiny_policy_dir, tmp_path, override, message):
    proc = subprocess.run(serve_cmd(f"checkpoint={tiny_policy_dir}", override), cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_compiled_policy_pads_each_batch_to_a_power_of_two(served):
    """Compiled, every batch size captures its own graphs: a call of 3 observations runs at batch 4 (the last one
    repeated) and returns 3 chunks, those of the unpadded call. The rule is checked without compiling (CPU); the
    compiled graphs themselves are tested in tests/models."""
    policy = served.policy
    rng = np.random.default_rng(0)
    observations = [served.parse({"observation/image": rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
                                  "observation/state": rng.normal(size=8).astype(np.float32)}) for _ in range(3)]
    noise = torch.randn(3, policy.cfg.action_horizon, policy.cfg.action_dim, generator=torch.Generator().manual_seed(0))
    unpadded = policy.act(observations, noise)
    seen = []
    sample = policy.model.sample_actions

    def counting_sample(batch, **kwargs):
        seen.append(len(batch["state"]))
        return sample(batch, **kwargs)

    policy.model.sample_actions = counting_sample
    policy.compiled = True
    try:
        padded = policy.act(observations, noise)
        assert [policy.batch_size_for(n) for n in (1, 2, 3, 5, 8, 9, 16, 17)] == [1, 2, 4, 8, 8, 16, 16, 32]
        assert policy.warm_up_sizes(16) == [1, 2, 4, 8, 16]
        assert [len(b) for b in served.warm_up_batches(16)] == [1, 2, 4, 8, 16]
    finally:
        policy.compiled = False
        del policy.model.sample_actions
    assert seen == [4] and padded.shape == unpadded.shape == (3, policy.cfg.action_horizon, 7)
    np.testing.assert_allclose(padded, unpadded, rtol=0, atol=1e-5)
    assert [len(b) for b in served.warm_up_batches(16)] == [1]  # eager: any size runs as it is
