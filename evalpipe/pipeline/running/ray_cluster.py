"""The few Ray calls evalpipe makes, behind types: Ray's own typing is partial, so everything untyped
stays in this module. Imported only by the Ray executor: users without Ray never import Ray."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

try:
    import ray
except ImportError as error:  # pragma: no cover - the message is the point
    from evalpipe.errors import ConfigError

    raise ConfigError("the ray executor needs Ray: pip install 'evalpipe[ray]'") from error


def connect(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address` ("auto", "ray://host:10001"), or start a local one when None and none
    is running; True when this call connected (False: this process was connected already)."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {}
    if address is None:
        options.update(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    elif not address.startswith("ray://"):  # Ray Client (ray://) takes none of these
        options.update(log_to_driver=False, configure_logging=False)
    ray.init(address=address, **options)
    return True


def disconnect() -> None:
    """Leave the cluster (and stop it when this process started it)."""
    ray.shutdown()


def cluster_cpus() -> int:
    """The CPUs the cluster offers, at least 1."""
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return max(1, int(resources.get("CPU", 1)))


def node_ids() -> list[str]:
    """The ids of the cluster's nodes that are alive now."""
    return [node["NodeID"] for node in ray.nodes() if node.get("Alive")]  # type: ignore[no-untyped-call]


def current_node() -> str:
    """The id of the node this process runs on."""
    node: str = ray.get_runtime_context().get_node_id()
    return node


class Actor:
    """A handle on a Ray actor: `call` a method and await it, or `send` without waiting."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def call(self, method: str, *args: Any) -> Any:
        """Call `method` on the actor and wait for its result without blocking the event loop."""
        return await getattr(self._handle, method).remote(*args)

    def call_blocking(self, method: str, *args: Any) -> Any:
        """Call `method` and wait for its result (outside an event loop)."""
        return ray.get(getattr(self._handle, method).remote(*args))

    def send(self, method: str, *args: Any) -> None:
        """Call `method` and do not wait: Ray runs it in the actor's order of arrival."""
        getattr(self._handle, method).remote(*args)

    def kill(self) -> None:
        """End the actor."""
        ray.kill(self._handle)


def start_actor(cls: type[Any], *args: Any, name: str | None = None, node: str | None = None) -> Actor:
    """An actor of `cls` (its methods may be async: they then share the actor's event loop), taking no
    CPU: it only does bookkeeping. `node`: on that node and no other. A `name` already taken gives the
    actor of that name. The actor is this process's: it ends when this process does."""
    options: dict[str, Any] = {}
    if name is not None:
        options.update(name=name, get_if_exists=True)
    if node is not None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
    remote_cls = ray.remote(num_cpus=0, max_restarts=0)(cls)
    return Actor(remote_cls.options(**options).remote(*args))


class Submitted:
    """A task submitted to the cluster."""

    def __init__(self, ref: Any) -> None:
        self._ref = ref

    async def result(self) -> Any:
        """Wait for the task's return value (its error re-raised)."""
        return await self._ref


def submit(function: Callable[..., Any], *args: Any, num_cpus: float = 1.0, max_retries: int = 3,
           env_vars: Mapping[str, str] | None = None) -> Submitted:
    """Run `function(*args)` on a worker; when the worker dies, Ray runs it again up to `max_retries` times."""
    options: dict[str, Any] = {"num_cpus": num_cpus, "max_retries": max_retries, "retry_exceptions": False}
    if env_vars:
        options["runtime_env"] = {"env_vars": dict(env_vars)}
    return Submitted(ray.remote(function).options(**options).remote(*args))


def task_error_types() -> tuple[type[BaseException], ...]:
    """What awaiting a task raises when its worker died and retries ran out, or the task raised."""
    return (ray.exceptions.RayError,)


__all__ = ["Actor", "Submitted", "cluster_cpus", "connect", "current_node", "disconnect", "node_ids",
           "start_actor", "submit", "task_error_types"]
