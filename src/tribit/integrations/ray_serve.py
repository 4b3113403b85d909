"""Many replicas of `tribit serve` behind one Ray Serve endpoint.

    serve run tribit.integrations.ray_serve:app model=/models/m.gguf slots=8 threads=8

or from Python (`serve.run(build_app(model="m.gguf", slots=8, threads=8))`), or a Serve
config file whose `import_path` is `tribit.integrations.ray_serve:app` and whose `args` are
the fields of `ServeArgs` (docs/SCALING.md has one). Needs `pip install "tribit[ray]"`.

One replica = one model (memory-mapped) and tribit's own continuous-batching engine, behind
the very app `tribit serve` runs (`tribit.server.app.create_app`): the same OpenAI routes,
API key, body limit, metrics and errors. Ray Serve adds replicas on other machines, one
HTTP proxy in front, health checks, restarts and autoscaling. A client that disconnects
cancels its request: Serve cancels the replica's task, the app's stream ends in its
`finally` and the engine frees the slot.

Sizing (`deployment_options`): each replica books `threads` CPUs and runs exactly `threads`
threads (Ray only books CPUs; tribit's thread count is set, not guessed; by default the
CPUs of the machine building the app less one, left to Ray's own processes); Serve sends a
replica at most `slots` requests at a time (its default of 5 would silently cap a bigger
replica or queue inside a smaller one) and queues at most `max_queued` more before
answering 503; with `max_replicas` it autoscales on ongoing requests per replica (target
0.75 x slots); one replica per node by default (decoding is memory-bandwidth-bound, so two
replicas on one machine compete for the same bandwidth). Stopping a replica lets its open
streams finish (up to `graceful_shutdown_s`) before the engine stops.

Security: Ray's usage statistics are off unless the environment says otherwise, Serve's
proxy listens on 127.0.0.1 unless `http_options` say otherwise (`run` takes `host`), and
the API key is checked by every replica. Ray's own ports listen on every interface: keep a
Ray cluster on a trusted network (docs/SCALING.md, "Security").
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before any ray.init of this process

try:
    from pydantic import BaseModel, ConfigDict, Field
    from ray import serve
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        'tribit.integrations.ray_serve needs Ray Serve: pip install "tribit[ray]"'
    ) from e

from tribit.errors import TribitError
from tribit.server.app import ServerSettings, State, create_app

__all__ = [
    "REPLICA_HEADER",
    "ServeArgs",
    "TribitReplica",
    "app",
    "build_app",
    "check_engine",
    "deployment_options",
    "run",
]

REPLICA_HEADER = "x-tribit-replica"  # which replica answered (its Serve replica id)


class ServeArgs(BaseModel):
    """The application's arguments (`serve run ... key=value`, a config file's `args`)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="GGUF file on every node (None: embedded)")
    slots: int = Field(4, ge=1, description="sequence slots per replica (tribit serve -np)")
    ctx: int | None = Field(None, ge=1, description="context per slot (tribit serve -c)")
    threads: int | None = Field(
        None,
        ge=1,
        description="threads and CPUs per replica "
        "(default: the CPUs of the machine building the app, less "
        "one for Ray's own processes)",
    )
    head_type: str | None = Field(None, description="repack the head at load: q8_0, q6_k")
    api_key: str | None = Field(None, description="Bearer key every replica requires")
    api_key_file: str | None = Field(None, description="file holding the key, on every node")
    alias: str | None = Field(None, description="model id reported by the API")
    cors_origins: list[str] = Field(default_factory=list)
    max_body: int = Field(4 << 20, ge=1, description="request body limit in bytes")
    stream_interval_ms: float = Field(
        30.0,
        ge=0,
        le=10_000,
        description="at most one SSE event per interval per stream (0: one per token)",
    )
    replicas: int = Field(1, ge=1, description="replicas (without autoscaling)")
    min_replicas: int = Field(1, ge=0, description="autoscaling: fewest replicas")
    max_replicas: int | None = Field(
        None,
        ge=1,
        description="autoscaling: most replicas (set: autoscale on ongoing requests per replica)",
    )
    replicas_per_node: int | None = Field(
        1, ge=1, description="most replicas on one node (None: no limit)"
    )
    max_queued: int = Field(64, ge=1, description="requests Serve queues before 503")
    graceful_shutdown_s: float = Field(
        60.0, ge=0, description="time open streams get to finish when a replica stops"
    )
    health_check_period_s: float = Field(10.0, gt=0)
    name: str = Field("tribit", description="the deployment's name")

    def resolved_threads(self) -> int:
        """`threads`, or this machine's CPUs less one: Ray's GCS, raylet, controller and
        proxy need some CPU, and an engine thread they preempt stalls every step
        (docs/SCALING.md, "Overhead")."""
        if self.threads is not None:
            return self.threads
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            n = os.cpu_count() or 1
        return max(1, n - 1)

    def api_key_value(self) -> str | None:
        """The key, read from `api_key_file` (on the replica's node) if given."""
        key = self.api_key
        if self.api_key_file is not None:
            key = Path(self.api_key_file).read_text().strip()
            if not key:
                raise TribitError(f"API key file {self.api_key_file} is empty")
        elif key is not None and not key.strip():
            raise TribitError("api_key is empty: give a non-empty key or leave it out")
        return key

    def settings(self) -> ServerSettings:
        """The replica's `tribit serve` settings (the key is read on the replica)."""
        return ServerSettings(
            model_path=self.model,
            n_parallel=self.slots,
            n_ctx=self.ctx,
            n_threads=self.resolved_threads(),
            api_key=self.api_key_value(),
            cors_origins=list(self.cors_origins),
            max_queue=self.slots,
            max_body_bytes=self.max_body,
            model_name=self.alias,
            head_type=self.head_type,
            stream_interval_ms=self.stream_interval_ms,
        )


def deployment_options(args: ServeArgs) -> dict[str, Any]:
    """Serve's deployment options for `args` (the sizing rules of the module docstring)."""
    threads = args.resolved_threads()
    opts: dict[str, Any] = {
        "name": args.name,
        "ray_actor_options": {"num_cpus": threads},
        "max_ongoing_requests": args.slots,
        "max_queued_requests": args.max_queued,
        "graceful_shutdown_timeout_s": args.graceful_shutdown_s,
        "health_check_period_s": args.health_check_period_s,
    }
    if args.replicas_per_node is not None:
        opts["max_replicas_per_node"] = args.replicas_per_node
    if args.max_replicas is not None:
        if args.max_replicas < args.min_replicas:
            raise TribitError("max_replicas must be >= min_replicas")
        opts["autoscaling_config"] = {
            "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas,
            "target_ongoing_requests": max(1.0, 0.75 * args.slots),
        }
    else:
        opts["num_replicas"] = args.replicas
    return opts


def check_engine(state: State) -> None:
    """Raise unless the replica can answer: the model loaded and its engine thread runs."""
    if state.load_error:
        raise RuntimeError(f"the model failed to load: {state.load_error}")
    engine = state.engine
    if engine is None:
        raise RuntimeError("the model is not loaded")
    if not engine.alive:
        raise RuntimeError(f"the engine thread is not running: {engine.error or 'stopped'}")


class _ReplicaHeader:
    """ASGI middleware: every response names the replica that made it."""

    def __init__(self, app, replica: str):
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_named(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_named)


@serve.ingress()
class TribitReplica:
    """One replica: loads the model (off the event loop), then serves `create_app`'s app."""

    async def __init__(self, args: dict[str, Any]):
        self.args = ServeArgs.model_validate(args)
        self.state = State(self.args.settings())
        await asyncio.to_thread(self.state.load)
        check_engine(self.state)  # a replica that cannot serve fails to start, loudly

    def __serve_build_asgi_app__(self):
        asgi = create_app(self.state.settings, state=self.state)
        try:
            replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a replica (tests of the class itself)
            replica = "local"
        asgi.add_middleware(_ReplicaHeader, replica=replica)
        return asgi

    def check_health(self) -> None:
        """Serve's periodic health check: fails when the engine thread died."""
        check_engine(self.state)


def build_app(args: ServeArgs | dict[str, Any] | None = None, **kwargs: Any):
    """The Serve application (`serve.run(build_app(model=..., slots=...))`)."""
    if isinstance(args, ServeArgs):
        args = args.model_copy(update=kwargs)
    else:
        args = ServeArgs.model_validate({**(args or {}), **kwargs})
    args = args.model_copy(update={"threads": args.resolved_threads()})  # fixed here, once
    deployment = serve.deployment(TribitReplica).options(**deployment_options(args))
    return deployment.bind(args.model_dump())


def app(args: dict[str, Any]):
    """The application builder `serve run` and config files call with their `args`."""
    return build_app(args)


def run(
    args: ServeArgs | dict[str, Any] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    route_prefix: str = "/",
    blocking: bool = False,
    **kwargs: Any,
):
    """Start Serve's proxy on `host:port` (loopback unless you say otherwise) and run the
    app; returns Serve's handle. Connects to the running Ray cluster, or starts a local one."""
    serve.start(http_options={"host": host, "port": port})
    return serve.run(
        build_app(args, **kwargs),
        name=kwargs.get("name", "tribit"),
        route_prefix=route_prefix,
        blocking=blocking,
    )
