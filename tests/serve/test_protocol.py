"""The wire format against openpi_client's own msgpack_numpy, and the request observation against what eval.py feeds
the policy for a live ManiSkill env."""

import numpy as np
import pytest
import torch
from openpi_client import msgpack_numpy as openpi_codec

from vla.configs import load_group
from vla.data.maniskill import observation_from_env
from vla.data.transforms import collate
from vla.serve.codec import CodecError, packb, unpackb
from vla.serve.protocol import ObservationError, ObservationSpec


def test_codec_reads_and_writes_what_openpi_client_does():
    message = {"observation/image": np.arange(12, dtype=np.uint8).reshape(2, 2, 3),
               "observation/state": np.array([0.5, -1.25], np.float64), "count": np.int64(7),
               "nested": {"x": np.ones((0, 3), np.float32)}, "prompt": "push", "flag": True}
    for decoded in (unpackb(openpi_codec.packb(message)), openpi_codec.unpackb(packb(message))):
        assert decoded.keys() == message.keys() and decoded["prompt"] == "push" and decoded["flag"] is True
        for key in ("observation/image", "observation/state"):
            assert decoded[key].dtype == message[key].dtype and np.array_equal(decoded[key], message[key])
        assert decoded["count"] == 7 and decoded["count"].dtype == np.int64
        assert decoded["nested"]["x"].shape == (0, 3)
    assert unpackb(packb(message))["observation/state"].flags.writeable  # torch may take it without a copy


def test_codec_refuses_objects_and_malformed_arrays():
    with pytest.raises(CodecError, match="object"):
        packb({"x": np.array([{}], dtype=object)})
    with pytest.raises(CodecError, match="object"):
        unpackb(openpi_codec.packb({"x": {b"__ndarray__": True, b"data": b"", b"dtype": "|O", b"shape": [0]}}))
    short = {b"__ndarray__": True, b"data": b"\0" * 5, b"dtype": "<f4", b"shape": [2]}
    with pytest.raises(CodecError, match=r"array of float32 \(2,\): expected 8 bytes, found 5"):
        unpackb(openpi_codec.packb({"x": short}))
    with pytest.raises(CodecError, match="not a msgpack message"):
        unpackb(packb({"x": 1})[:-1])


def maniskill_observation(task, rng) -> dict:
    """A ManiSkill obs_mode="rgb" observation of one env (batched, as ManiSkill returns it): RGBA sensor frames,
    qpos with both fingers, and the extras a task's state reads."""
    S = task.image_size
    sensors = {cam: {"rgb": rng.integers(0, 256, (1, S, S, 4), dtype=np.uint8)} for cam in task.cameras}
    extra = {"goal_pos": rng.normal(size=(1, 3)), "tcp_pose": rng.normal(size=(1, 7))}
    return {"sensor_data": sensors, "agent": {"qpos": rng.normal(size=(1, 9))}, "extra": extra}


@pytest.mark.parametrize("task_name", ["pushcube", "stackcube", "pickcube"])
def test_request_becomes_what_eval_feeds_the_policy(task_name):
    """The request of a live env's frames and state (cameras under observation/image and observation/wrist_image)
    gives the same observation-schema sample, and so the same model batch, as eval.py's observation_from_env."""
    from vla.data.transforms import ModelTransform
    from vla.models import load_policy_config

    task = load_group("task", task_name, ["task.image_size=32"])
    spec = ObservationSpec.for_task(task)
    rng = np.random.default_rng(0)
    raw = maniskill_observation(task, rng)
    live = observation_from_env(raw, task)
    request = {key: raw["sensor_data"][cam]["rgb"][0, ..., :3] for cam, schema_key in task.cameras.items()
               for key, k in spec.cameras.items() if k == schema_key}
    request["observation/state"] = live["state"].astype(np.float64)  # any float dtype is taken
    assert sorted(request) == sorted(spec.keys[:-1])
    served = spec.to_schema(unpackb(packb(request)))
    assert served["prompt"] == live["prompt"] == task.prompt
    stats = {"state": {s: np.zeros(task.state_dim) for s in ("mean", "q01")} | {
        s: np.ones(task.state_dim) for s in ("std", "q99")},
        "actions": {s: np.zeros(7) for s in ("mean", "q01")} | {s: np.ones(7) for s in ("std", "q99")}}
    from vla.data.tokenizer import PromptTokenizer, resolve_tokenizer

    cfg = load_policy_config("pi05_tiny")
    transform = ModelTransform(cfg, stats, PromptTokenizer(resolve_tokenizer(None), cfg.max_token_len, True))
    ours, theirs = collate([transform(served)]), collate([transform(live)])
    assert ours["images"].keys() == theirs["images"].keys()
    for key in theirs["images"]:
        assert torch.equal(ours["images"][key], theirs["images"][key])
    for key in ("tokens", "token_mask", "state"):
        assert torch.equal(ours[key], theirs[key])


def test_observation_errors_name_key_expected_and_found():
    task = load_group("task", "pickcube", ["task.image_size=32"])
    spec = ObservationSpec.for_task(task, prompt="pick it")
    ok = {"observation/image": np.zeros((32, 32, 3), np.uint8), "observation/state": [0.0] * 11}
    assert spec.to_schema(ok)["prompt"] == "pick it" and spec.to_schema(ok)["state"].dtype == np.float32
    cases = {
        "observation/state: expected float (11,) = agent/qpos[:8] + extra/goal_pos (3), found a list of 8":
            {**ok, "observation/state": [0.0] * 8},
        "observation/state: non-finite value at index 2": {**ok, "observation/state": [0, 0, np.nan] + [0] * 8},
        "observation/image: expected uint8 (32, 32, 3), found uint8 (3, 32, 32); send the camera's RGB frame "
        "(height, width, channel) at the task's image size 32": {**ok, "observation/image": np.zeros((3, 32, 32),
                                                                                                     np.uint8)},
        "observation: expected a dict": [1, 2],
    }
    for message, obs in cases.items():
        with pytest.raises(ObservationError) as error:
            spec.to_schema(obs)
        assert str(error.value).startswith(message), str(error.value)
