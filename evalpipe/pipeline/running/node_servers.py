"""Backends whose server each node runs itself (the embedded llama-server of `local`) in a sharded run:
one server per node and server configuration, one lease actor per backend and node, shared by every
shard on that node.

    driver, per node n ─▶ LlamaServerActor per configuration (pinned to n, named, owned by the driver)
                       └▶ LimitsActor per backend (pinned to n): the backend's max_concurrency on n
    shard on node n ─▶ its local providers attached to n's server (loopback), places leased from n's actor
    run ends ─▶ every server stopped, every actor ended
    driver dies ─▶ Ray ends the actors it owns, and the kernel each actor's server with it

A server starts on a shard's first call, so a node no shard runs on starts none.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from evalpipe.backends.base import Provider
from evalpipe.backends.llama_server import LlamaServer, ServerSettings
from evalpipe.backends.local import LocalProvider
from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.spec import BackendSpec
from evalpipe.pipeline.running import ray_cluster
from evalpipe.pipeline.running.job_backends import build_provider
from evalpipe.pipeline.running.ray_actors import ActorLeases, LimitsActor

log = structlog.get_logger("evalpipe.run")


class LlamaServerActor:
    """One llama-server on this node for one configuration, started on first use (runs as a Ray actor).

    Its methods are plain functions: Ray runs them one at a time, so two shards asking at once start one
    server. The server is this actor process's child and ends with it (see `llama_server`)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.server = LlamaServer(settings)

    def address(self, broken: bool) -> tuple[str, str]:
        """The server's root URL and key, started (or restarted after a crash) now if needed."""
        if broken:  # a connection broke: give a dying server the moment it needs to be seen as dead
            self.server.wait_exit(1.0)
        self.server.start()
        return self.server.base_url, self.server.api_key

    def stats(self) -> dict[str, Any]:
        """Processes started, and the one running now (its pid, or None)."""
        process = self.server.process
        return {"starts": self.server.starts, "pid": process.pid if process is not None else None,
                "running": self.server.running}

    def stop(self) -> None:
        """Stop the server (the run is over)."""
        self.server.stop()


class ActorServer:
    """A shard's `ServerSource` over its node's `LlamaServerActor`."""

    def __init__(self, actor: ray_cluster.Actor) -> None:
        self.actor = actor

    async def address(self, broken: bool) -> tuple[str, str]:
        url, key = await self.actor.call("address", broken)
        return str(url), str(key)


@dataclass(frozen=True, slots=True)
class NodeBackends:
    """The per-node backends' actors (sent to every shard): backend id -> node id -> actor."""

    servers: dict[str, dict[str, ray_cluster.Actor]] = field(default_factory=dict)
    limits: dict[str, dict[str, ray_cluster.Actor]] = field(default_factory=dict)

    def limits_on(self, backend_id: str, node: str) -> ray_cluster.Actor | None:
        """The lease actor of `backend_id` on `node` (None: a node that joined after the run started)."""
        return self.limits.get(backend_id, {}).get(node)

    def server_actors(self) -> list[ray_cluster.Actor]:
        """Every server actor once (backends of one configuration share theirs)."""
        unique = {id(actor): actor for by_node in self.servers.values() for actor in by_node.values()}
        return list(unique.values())


def server_settings(spec: BackendSpec, environ: Mapping[str, str]) -> ServerSettings | None:
    """The server `spec` runs on each node; None when it runs none, or cannot be built (its shards then
    report why, as any run would)."""
    try:
        provider = build_provider(spec, environ)
    except ConfigError:
        return None
    return provider.settings if isinstance(provider, LocalProvider) else None


def start_node_backends(specs: Iterable[BackendSpec], run_id: str, period_s: float) -> NodeBackends:
    """A server actor per node and configuration, a lease actor per node and backend, for `specs`."""
    nodes = NodeBackends()
    servers: dict[tuple[str, ServerSettings], ray_cluster.Actor] = {}
    for spec in specs:
        settings = server_settings(spec, os.environ)
        if settings is None or spec.id in nodes.servers:
            continue
        digest = hashlib.sha256(repr(settings).encode()).hexdigest()[:12]
        for node in ray_cluster.node_ids():
            if (node, settings) not in servers:
                servers[node, settings] = ray_cluster.start_actor(
                    LlamaServerActor, settings, name=f"evalpipe-llama-{run_id}-{node}-{digest}", node=node)
            nodes.servers.setdefault(spec.id, {})[node] = servers[node, settings]
            nodes.limits.setdefault(spec.id, {})[node] = ray_cluster.start_actor(
                LimitsActor, spec.rpm, spec.tpm, period_s, spec.max_concurrency,
                name=f"evalpipe-limits-{run_id}-{node}-{spec.id}", node=node)
    return nodes


def attached_providers(nodes: NodeBackends, specs: Iterable[BackendSpec], node: str) -> dict[str, Provider]:
    """Providers for the per-node backends among `specs`, attached to `node`'s servers (over loopback)."""
    providers: dict[str, Provider] = {}
    for spec in specs:
        if spec.id in providers or spec.id not in nodes.servers:
            continue
        actor = nodes.servers[spec.id].get(node)
        if actor is None:  # a node that joined after the run started
            log.warning("node has no server of its own: this shard starts one", backend=spec.id, node=node)
            continue
        provider = build_provider(spec, os.environ)
        if not isinstance(provider, LocalProvider):
            raise ConfigError(f"backend {spec.id}: a per-node server needs the local backend, not {provider.name}")
        provider.attach(ActorServer(actor))
        providers[spec.id] = provider
    return providers


async def node_stats(nodes: NodeBackends) -> dict[str, dict[str, Any]]:
    """Each per-node lease actor's counters with its node's server's: `backend@node` -> counters."""
    stats: dict[str, dict[str, Any]] = {}
    for backend_id, by_node in nodes.limits.items():
        for node, actor in by_node.items():
            server = await nodes.servers[backend_id][node].call("stats")
            stats[f"{backend_id}@{node}"] = {**await actor.call("stats"), "server": server}
    return stats


async def leave_other_nodes(nodes: NodeBackends, worker: str, node: str) -> None:
    """Free the places an earlier, dead run of `worker` holds on other nodes' lease actors: a shard run
    again may land on another node (on its own node, its first request for places frees them)."""
    for by_node in nodes.limits.values():
        for other, actor in by_node.items():
            if other == node:
                continue
            try:
                await ActorLeases(actor).give_back_places(worker, 0, True)
            except ray_cluster.task_error_types():
                pass  # that node is gone, and its places with it


async def stop_servers(nodes: NodeBackends) -> None:
    """Stop every node's server (the run is over); an actor already gone has taken its server along."""
    for actor in nodes.server_actors():
        try:
            await actor.call("stop")
        except ray_cluster.task_error_types() as error:
            log.warning("node server actor gone before the run's end", error=str(error).splitlines()[0])


def all_actors(nodes: NodeBackends) -> list[ray_cluster.Actor]:
    """Every actor of `nodes`, to end with the run."""
    return [*nodes.server_actors(), *(actor for by_node in nodes.limits.values() for actor in by_node.values())]


__all__ = ["ActorServer", "LlamaServerActor", "NodeBackends", "all_actors", "attached_providers",
           "leave_other_nodes", "node_stats", "server_settings", "start_node_backends", "stop_servers"]
