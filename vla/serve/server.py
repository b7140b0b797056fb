"""A websocket server speaking openpi's policy protocol (openpi src/openpi/serving/websocket_policy_server.py; the
client is openpi_client.websocket_client_policy.WebsocketClientPolicy), serving many clients at once:

  connect        the server sends its metadata first (msgpack)
  request        one observation per binary frame (msgpack-numpy, `vla.serve.codec`)
  response       {"actions": ..., "policy_timing": {"infer_ms"}, "server_timing": {"infer_ms", "queue_ms",
                 "batch_size", "prev_total_ms"}} (prev_total_ms: the previous request's time in the server, as openpi)
  bad request    one line in a text frame (openpi_client raises it as a RuntimeError); the connection stays open
  failed batch   the error in a text frame, then the connection closes with 1011 (internal error), as openpi's
  GET /healthz   200 "OK"; with an API key set, every other request needs `Authorization: Api-Key <key>` (what
                 openpi_client sends for its `api_key`) or gets 401

The event loop never runs the model. Requests wait in a queue; one worker thread takes everything queued (up to
`max_batch_size`) as one batch, for one batched policy call: clients whose requests arrive together share it, and a
request arriving during a call waits for at most that call before its own batch starts. Each connection awaits only
its own result and sends it itself, so a slow or vanished client holds up nobody; a request whose client disconnected
before its batch started is dropped.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from vla.serve.codec import CodecError, first_line, packb, unpackb
from vla.serve.protocol import ObservationError

log = logging.getLogger(__name__)

InferBatch = Callable[[list[Any]], list[dict]]  # parsed requests -> one response dict each; runs on the worker thread
Parse = Callable[[Any], Any]  # a decoded message -> a request (or ObservationError); runs on the event loop: cheap


class InferenceError(RuntimeError):
    """The batched policy call failed: every request of the batch gets this one line."""


@dataclass
class _Request:
    payload: Any
    future: asyncio.Future
    received: float  # time.monotonic() when the message arrived


@dataclass
class ServerSettings:
    host: str = "0.0.0.0"
    port: int = 8000  # 0: any free port (the one taken is logged and given to `on_ready`)
    api_key: str | None = None
    max_batch_size: int = 16
    batch_window_ms: float = 0.0  # wait this long after a request arrives for others to join its batch
    max_message_bytes: int | None = 64 * 2**20


class PolicyServer:
    def __init__(self, infer_batch: InferBatch, parse: Parse, metadata: dict, settings: ServerSettings):
        self.infer_batch, self.parse, self.settings = infer_batch, parse, settings
        self.metadata = packb(metadata)
        self._queue: asyncio.Queue[_Request] | None = None

    async def run(self, stop: asyncio.Event, on_ready: Callable[[int], None] | None = None,
                  warm_up: list[list[Any]] = ()) -> None:
        """Serve until `stop` is set; `on_ready(port)` once the socket listens. `warm_up`: batches of parsed requests
        run once each before listening, on the worker thread that runs every call (compiled CUDA graphs belong to one
        thread, and a batch size first seen while serving would stall its batch for the compilation)."""
        s = self.settings
        self._queue = asyncio.Queue()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vla-inference") as executor:
            for batch in warm_up:
                t0 = time.monotonic()
                await asyncio.get_running_loop().run_in_executor(executor, self.infer_batch, batch)
                log.info("warm-up call, batch %d: %.0f ms", len(batch), (time.monotonic() - t0) * 1000)
            batches = asyncio.create_task(self._batch_loop(executor))
            try:
                async with serve(self._handle, s.host, s.port, compression=None, max_size=s.max_message_bytes,
                                 process_request=self._process_request) as server:
                    port = server.sockets[0].getsockname()[1]
                    log.info("serving on ws://%s:%d (health: http://%s:%d/healthz)%s", s.host, port, s.host, port,
                             ", API key required" if s.api_key else "")
                    if on_ready is not None:
                        on_ready(port)
                    await stop.wait()
            finally:
                batches.cancel()
                with suppress(asyncio.CancelledError):
                    await batches

    # ------------------------------------------------------------------ HTTP: health and API key
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0] == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        key = self.settings.api_key
        if key and not hmac.compare_digest(request.headers.get("Authorization", ""), f"Api-Key {key}"):
            log.warning("refused %s: missing or wrong API key", connection.remote_address)
            return connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                      "missing or wrong API key: send the header 'Authorization: Api-Key <key>'\n")
        return None

    # ------------------------------------------------------------------ one connection
    async def _handle(self, ws: ServerConnection) -> None:
        peer = ws.remote_address
        log.info("connection from %s", peer)
        prev_total_ms = None
        try:
            await ws.send(self.metadata)
            async for message in ws:
                received = time.monotonic()
                try:
                    if isinstance(message, str):
                        raise CodecError("expected a binary frame holding a msgpack-numpy observation, found text")
                    request = self.parse(unpackb(message))
                except (CodecError, ObservationError) as e:
                    await ws.send(f"bad request: {e}")
                    continue
                result = await self._submit(ws, request, received)
                if result is None:  # the client left while its request waited
                    return
                response, timing = result
                timing["queue_ms"] = (timing.pop("started") - received) * 1000
                if prev_total_ms is not None:
                    timing["prev_total_ms"] = prev_total_ms
                await ws.send(packb({**response, "server_timing": timing,
                                     "policy_timing": {"infer_ms": timing["infer_ms"]}}))
                prev_total_ms = (time.monotonic() - received) * 1000
        except InferenceError as e:
            with suppress(ConnectionClosed):
                await ws.send(str(e))
                await ws.close(CloseCode.INTERNAL_ERROR, "inference failed: the error is in the previous frame")
        except ConnectionClosed:
            pass
        finally:
            log.info("connection from %s closed", peer)

    async def _submit(self, ws: ServerConnection, payload: Any, received: float) -> tuple[dict, dict] | None:
        """Queue one request and wait for its result, or for the connection to close (then None; the request is
        cancelled and the batch loop skips it)."""
        request = _Request(payload, asyncio.get_running_loop().create_future(), received)
        self._queue.put_nowait(request)
        closed = asyncio.ensure_future(ws.wait_closed())
        try:
            await asyncio.wait({request.future, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not request.future.done():
            request.future.cancel()
            return None
        return request.future.result()

    # ------------------------------------------------------------------ batching
    async def _next_batch(self) -> list[_Request]:
        batch = [await self._queue.get()]
        # one turn of the loop (or the window) lets handlers whose messages arrived together queue theirs
        await asyncio.sleep(self.settings.batch_window_ms / 1000)
        while len(batch) < self.settings.max_batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return [r for r in batch if not r.future.done()]  # done already: cancelled by a disconnect

    async def _batch_loop(self, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            started = time.monotonic()
            try:
                outputs = await loop.run_in_executor(executor, self.infer_batch, [r.payload for r in batch])
            except Exception as e:  # noqa: BLE001 (reported to the batch's clients, logged with its traceback)
                log.exception("inference failed for a batch of %d", len(batch))
                error = InferenceError(f"inference failed: {first_line(e)}")
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(error)
                continue
            timing = {"infer_ms": (time.monotonic() - started) * 1000, "batch_size": len(batch), "started": started}
            for r, out in zip(batch, outputs, strict=True):
                if not r.future.done():
                    r.future.set_result((out, dict(timing)))


class ServerThread:
    """A PolicyServer on its own event loop in a background thread (tests, benchmarks):
    `with ServerThread(server) as port: ...`."""

    def __init__(self, server: PolicyServer, timeout_s: float = 60.0):
        self.server, self.timeout_s = server, timeout_s
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.port: int | None = None

    def _main(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await self.server.run(self._stop, self._on_ready)

        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 (re-raised in the caller's thread)
            self._error = e
            self._ready.set()

    def _on_ready(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def __enter__(self) -> int:
        self._thread = threading.Thread(target=self._main, name="vla-serve", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.timeout_s):
            raise TimeoutError(f"the server did not start within {self.timeout_s} s")
        if self._error is not None:
            raise self._error
        return self.port

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self.timeout_s)
