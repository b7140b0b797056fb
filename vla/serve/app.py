"""serve.py's job: the policy eval.py would load for this checkpoint, behind the websocket server."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

import numpy as np

from vla.data.config import TaskConfig
from vla.eval.policy import Policy
from vla.serve.protocol import ObservationSpec
from vla.serve.server import PolicyServer, ServerSettings

if TYPE_CHECKING:
    from vla.configs import ServeConfig

log = logging.getLogger(__name__)


class ServedPolicy:
    """A loaded Policy as the server uses it: `parse` checks a request on the event loop, `infer_batch` runs the
    batched call on the worker thread."""

    def __init__(self, policy: Policy, task: TaskConfig, prompt: str | None = None):
        self.policy, self.task = policy, task
        self.spec = ObservationSpec.for_task(task, prompt)
        expected = len(policy.transform.state_norm.q01)
        if expected != task.state_dim:
            raise ValueError(f"task.state_dim={task.state_dim}, but the checkpoint's norm stats hold {expected} state "
                             "dims: serve the task the checkpoint was trained on")

    def parse(self, obs: object) -> dict:
        return self.spec.to_schema(obs)

    def infer_batch(self, samples: list[dict]) -> list[dict]:
        chunks = self.policy.act(samples)
        return [{"actions": chunk.astype(np.float32)} for chunk in chunks]

    def metadata(self, max_batch_size: int) -> dict:
        cfg = self.policy.cfg
        return {
            "model": cfg.name, "task": self.task.name, "env_id": self.task.env_id,
            "control_mode": self.task.control_mode, "control_freq": self.task.control_freq,
            "action_horizon": cfg.action_horizon, "action_dim": self.policy.action_dim,
            "observation": self.spec.describe(), "max_batch_size": max_batch_size,
        }

    def warm_up_batches(self, max_batch_size: int) -> list[list[dict]]:
        """One batch of example requests per batch size the policy runs at for 1..max_batch_size requests (one, eager;
        each power of two, compiled)."""
        request = self.parse(self.example_observation())
        return [[request] * size for size in self.policy.warm_up_sizes(max_batch_size)]

    def example_observation(self) -> dict:
        """A request of the right shapes (zeros): the warm-up call, and a template for clients."""
        S = self.spec.image_size
        obs = {key: np.zeros((S, S, 3), np.uint8) for key in self.spec.cameras}
        return {**obs, "observation/state": np.zeros(self.spec.state_dim, np.float32)}


def load_served_policy(cfg: ServeConfig) -> ServedPolicy:
    task = cfg.task
    policy = Policy.load(cfg.checkpoint, cfg.model, cfg.norm_stats or task.norm_stats, task.action_dim, cfg.device,
                         cfg.precision, cfg.eval.num_denoise_steps, cfg.compile)
    return ServedPolicy(policy, task, cfg.prompt)


def make_server(served: ServedPolicy, settings: ServerSettings) -> PolicyServer:
    return PolicyServer(served.infer_batch, served.parse, served.metadata(settings.max_batch_size), settings)


def serve(cfg: ServeConfig) -> None:
    """Load, warm up, serve until SIGINT or SIGTERM."""
    served = load_served_policy(cfg)
    settings = ServerSettings(cfg.host, cfg.port, cfg.api_key, cfg.max_batch_size, cfg.batch_window_ms,
                              cfg.max_message_mb * 2**20)
    server = make_server(served, settings)
    logging.getLogger("websockets").setLevel(logging.WARNING)  # connections are logged here, once each

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("policy %s (%s, %s) for %s: observation %s", served.policy.cfg.name, cfg.device, cfg.precision,
                 served.task.name, ", ".join(served.spec.keys))
        await server.run(stop, warm_up=served.warm_up_batches(settings.max_batch_size))

    asyncio.run(main())
