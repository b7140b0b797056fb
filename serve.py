"""Serve a policy to robots: `python serve.py checkpoint=<run, checkpoint or policy dir> [port=8000] [key=value]`.

openpi's websocket protocol, as `openpi_client.websocket_client_policy.WebsocketClientPolicy` speaks it: the server
sends its metadata on connect, each observation (msgpack-numpy) gets an action chunk back, a bad request gets one
line of text; `GET /healthz` answers 200. The checkpoint's recorded task and model are used, as eval.py uses them;
requests from several clients are batched into one policy call (vla/serve/server.py). Nothing is written to disk.
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vla.configs import ConfigError, ServeConfig, app_config
from vla.models.weights import CheckpointError
from vla.serve.app import serve

log = logging.getLogger("serve")


@hydra.main(config_path="pkg://vla.conf", config_name="serve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        serve(app_config(cfg, ServeConfig, "serve.py", HydraConfig.get().overrides.task))
    except (ConfigError, FileNotFoundError, CheckpointError, ValueError, OSError) as e:
        print(f"serve.py: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
