"""The policy server with the real openpi client (openpi_client.websocket_client_policy) on loopback: metadata,
inference, health and API key, batching of concurrent clients, a slow client, bad requests, disconnects and failed
batches. Two policies sit behind it: the tiny random pi05 policy (tests/serve/tiny_policy.py), and a stand-in whose
calls take a fixed time and echo the request, for the timing and routing claims. Every wait is bounded."""

import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import websockets.sync.client
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.serve.conftest import IMAGE_SIZE
from vla.serve.app import make_server
from vla.serve.codec import packb, unpackb
from vla.serve.protocol import ObservationError
from vla.serve.server import PolicyServer, ServerSettings, ServerThread

WAIT_S = 30  # the bound on any single wait in these tests
pytestmark = pytest.mark.timeout(120)


def observation(seed: int = 0, **extra) -> dict:
    rng = np.random.default_rng(seed)
    return {"observation/image": rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8),
            "observation/state": rng.normal(size=8).astype(np.float32), **extra}


def settings(**kwargs) -> ServerSettings:
    return ServerSettings(host="127.0.0.1", port=0, **kwargs)


def client(port: int, api_key: str | None = None) -> WebsocketClientPolicy:
    return WebsocketClientPolicy("127.0.0.1", port, api_key=api_key)


def in_threads(fns: list, timeout: float = WAIT_S * 2) -> list:
    """Run each callable in its own thread, at once; their results (an exception is re-raised)."""
    with ThreadPoolExecutor(len(fns)) as pool:
        futures = [pool.submit(fn) for fn in fns]
        return [f.result(timeout=timeout) for f in futures]


class Echo:
    """A stand-in policy: each batched call takes `call_s` seconds and answers each request with its own id; an id of
    -1 fails the call. Records every batch it was given."""

    def __init__(self, call_s: float):
        self.call_s, self.batches, self.calls_started = call_s, [], threading.Event()

    def parse(self, obs: object) -> int:
        if not isinstance(obs, dict) or "id" not in obs:
            raise ObservationError("observation: missing 'id'")
        return int(obs["id"])

    def infer_batch(self, ids: list[int]) -> list[dict]:
        self.batches.append(list(ids))
        self.calls_started.set()
        time.sleep(self.call_s)
        if -1 in ids:
            raise RuntimeError("the stand-in failed\nsecond line")
        return [{"actions": np.full((2, 3), i, np.float32)} for i in ids]

    def server(self, **kwargs) -> ServerThread:
        return ServerThread(PolicyServer(self.infer_batch, self.parse, {"stand_in": True}, settings(**kwargs)))


# ------------------------------------------------------------------ the tiny policy


def test_metadata_health_and_one_inference(served):
    with ServerThread(make_server(served, settings())) as port:
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=WAIT_S).read() == b"OK\n"
        policy = client(port)
        meta = policy.get_server_metadata()
        assert (meta["model"], meta["task"], meta["action_horizon"], meta["action_dim"]) == ("pi05_tiny", "pushcube",
                                                                                             10, 7)
        assert meta["observation"]["observation/image"] == {"dtype": "uint8", "shape": [IMAGE_SIZE, IMAGE_SIZE, 3]}
        assert meta["observation"]["observation/state"]["shape"] == [8]
        first = policy.infer(observation(prompt="Push and move a cube to a goal region in front of it."))
        second = policy.infer(observation())  # the task's prompt by default
        for reply in (first, second):
            assert reply["actions"].shape == (10, 7) and reply["actions"].dtype == np.float32
            assert np.isfinite(reply["actions"]).all()
            assert reply["server_timing"]["batch_size"] == 1 and reply["server_timing"]["infer_ms"] > 0
            assert reply["policy_timing"]["infer_ms"] == reply["server_timing"]["infer_ms"]
        assert "prev_total_ms" in second["server_timing"] and "prev_total_ms" not in first["server_timing"]
        assert not np.array_equal(first["actions"], second["actions"])  # fresh noise per request


def test_api_key_required_except_for_health(served):
    with ServerThread(make_server(served, settings(api_key="s3cret"))) as port:
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=WAIT_S).status == 200
        for key in (None, "wrong"):
            with pytest.raises(InvalidStatus, match="401"):
                client(port, api_key=key)
        assert client(port, api_key="s3cret").infer(observation())["actions"].shape == (10, 7)


def test_bad_requests_answered_in_one_line_and_the_connection_keeps_serving(served):
    with ServerThread(make_server(served, settings())) as port:
        policy = client(port)
        image = observation()["observation/image"]
        bad = {
            "observation/state: expected float (8,) = agent/qpos[:8], found float32 (7,)":
                observation(**{"observation/state": np.zeros(7, np.float32)}),
            f"observation/image: expected uint8 ({IMAGE_SIZE}, {IMAGE_SIZE}, 3), found float32":
                observation(**{"observation/image": image.astype(np.float32)}),
            "observation: missing 'observation/state'": {"observation/image": image},
            "observation: unknown key 'observation/wrist_image'":
                observation(**{"observation/wrist_image": image}),  # PushCube has no hand camera
            "prompt: expected a non-empty str": observation(prompt=3),
        }
        for message, obs in bad.items():
            with pytest.raises(RuntimeError) as error:
                policy.infer(obs)
            line = str(error.value).splitlines()[-1]
            assert line.startswith("bad request: ") and message in line, line
        assert policy.infer(observation())["actions"].shape == (10, 7)  # the same connection still serves
        with websockets.sync.client.connect(f"ws://127.0.0.1:{port}", open_timeout=WAIT_S) as raw:
            raw.recv(timeout=WAIT_S)  # metadata
            for frame in ("not binary", b"\xc1 not msgpack"):
                raw.send(frame)
                reply = raw.recv(timeout=WAIT_S)
                assert isinstance(reply, str) and reply.startswith("bad request: ") and "\n" not in reply
            raw.send(packb(observation()))
            assert unpackb(raw.recv(timeout=WAIT_S))["actions"].shape == (10, 7)


@pytest.mark.slow
def test_eight_clients_batched_and_a_slow_one_delays_nobody(served):
    """7 clients ask back to back, one sleeps 1 s between requests: requests arriving together share a batched call,
    and a fast request waits at most for the call in progress before its own starts."""
    with ServerThread(make_server(served, settings())) as port:
        clients = [client(port) for _ in range(8)]

        def run(i: int) -> list[tuple[float, dict]]:
            replies = []
            for k in range(4 if i else 3):
                if i == 0 and k:
                    time.sleep(1.0)
                t0 = time.monotonic()
                reply = clients[i].infer(observation(seed=i))
                replies.append((time.monotonic() - t0, reply))
            return replies

        results = in_threads([lambda i=i: run(i) for i in range(8)])
    timings = [reply["server_timing"] for replies in results for _, reply in replies]
    assert all(reply["actions"].shape == (10, 7) for replies in results for _, reply in replies)
    assert max(t["batch_size"] for t in timings) > 1
    longest_call = max(t["infer_ms"] for t in timings)
    for replies in results[1:]:
        for roundtrip, reply in replies:
            assert reply["server_timing"]["queue_ms"] <= longest_call + 250, (reply["server_timing"], longest_call)
            assert roundtrip * 1000 <= reply["server_timing"]["infer_ms"] + longest_call + 500


# ------------------------------------------------------------------ the stand-in: timing, routing, failures


def test_concurrent_requests_get_their_own_answers_and_wait_at_most_one_call():
    echo = Echo(call_s=0.3)
    with echo.server() as port:
        clients = [client(port) for _ in range(8)]
        assert clients[0].get_server_metadata() == {"stand_in": True}

        def run(i: int) -> list[tuple[float, int]]:
            out = []
            for k in range(3):
                t0 = time.monotonic()
                reply = clients[i].infer({"id": 10 * i + k})
                out.append((time.monotonic() - t0, int(reply["actions"][0, 0])))
            return out

        results = in_threads([lambda i=i: run(i) for i in range(8)])
    for i, replies in enumerate(results):
        assert [answer for _, answer in replies] == [10 * i + k for k in range(3)]  # each its own, in order
        # the call in progress (0.3 s), then its own (0.3 s); serving 8 one at a time would take up to 2.4 s
        assert all(roundtrip < 2 * 0.3 + 0.4 for roundtrip, _ in replies), replies
    assert max(len(b) for b in echo.batches) > 1 and len(echo.batches) < 24


def test_client_disconnecting_mid_request_harms_nobody():
    echo = Echo(call_s=0.5)
    with echo.server() as port:
        staying = client(port)
        ask = ThreadPoolExecutor(1).submit(staying.infer, {"id": 1})  # occupies the worker for 0.5 s
        assert echo.calls_started.wait(WAIT_S)
        leaving = websockets.sync.client.connect(f"ws://127.0.0.1:{port}", open_timeout=WAIT_S)
        leaving.recv(timeout=WAIT_S)
        leaving.send(packb({"id": 2}))  # queued behind the call in progress...
        leaving.close()  # ...and gone before its batch starts: dropped
        assert int(ask.result(timeout=WAIT_S)["actions"][0, 0]) == 1
        # gone while its own batch runs: its neighbour in that batch still gets its answer
        echo.calls_started.clear()
        second = ThreadPoolExecutor(1).submit(staying.infer, {"id": 3})
        leaving = websockets.sync.client.connect(f"ws://127.0.0.1:{port}", open_timeout=WAIT_S)
        leaving.recv(timeout=WAIT_S)
        leaving.send(packb({"id": 4}))
        assert echo.calls_started.wait(WAIT_S)
        leaving.close()
        assert int(second.result(timeout=WAIT_S)["actions"][0, 0]) == 3
        assert int(client(port).infer({"id": 5})["actions"][0, 0]) == 5  # and new clients are served
    assert 2 not in [i for batch in echo.batches for i in batch]


def test_failed_batch_reported_to_its_clients_and_the_server_keeps_serving():
    echo = Echo(call_s=0.0)
    with echo.server() as port:
        failing = client(port)
        with pytest.raises(RuntimeError, match="inference failed: RuntimeError: the stand-in failed$"):
            failing.infer({"id": -1})
        with pytest.raises(ConnectionClosed):  # closed with 1011 after the error, as openpi's server does
            failing.infer({"id": 1})
        assert int(client(port).infer({"id": 2})["actions"][0, 0]) == 2
        with pytest.raises(urllib.error.HTTPError, match="426"):  # a plain HTTP request elsewhere is no websocket
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=WAIT_S)
