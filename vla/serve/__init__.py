"""Serving a policy to robots over openpi's websocket protocol (`python serve.py checkpoint=<dir>`): `codec` (the
msgpack-numpy wire format), `protocol` (the observation a request carries and what it becomes), `server` (the
websocket server: connections, batching, the inference worker)."""
