"""Placement: a one-bundle placement group per session (Ray's scheduler decides the node),
and what the cluster's nodes have, for clear refusals."""

from __future__ import annotations

import uuid
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group

from ._errors import PlacementError

#: The custom resource that counts a node's sandbox slots (its capacity in sessions).
SLOT_RESOURCE = "sandbox_slots"


def reserve(
    name: str, bundle: dict[str, float], timeout_s: float, slot_resource: str | None, label: str
) -> tuple[PlacementGroup, str]:
    """A one-bundle placement group for session `name`, ready, and the node Ray put it on.
    A bundle no alive node could ever hold is refused at once; one that finds no room within
    `timeout_s` is refused then (its group removed); both as PlacementError, naming what the
    session needs and what each node has."""
    alive = alive_nodes()
    if not any(all(n.get("Resources", {}).get(k, 0) >= v for k, v in bundle.items()) for n in alive):
        have = "; ".join(f"{n['NodeID'][:12]}: {_describe(n.get('Resources', {}), bundle)}" for n in alive)
        hint = f" (start nodes with: ray start --resources '{{\"{slot_resource}\": N}}')" if slot_resource else ""
        raise PlacementError(
            f"no node of the cluster can ever hold session {name!r}: it needs {_fmt(bundle)}, and the "
            f"nodes have {have or 'nothing (no alive node)'}{hint}"
        )
    pg = placement_group([bundle], strategy="STRICT_PACK", name=f"{label}-{uuid.uuid4().hex[:8]}")
    try:
        ray.get(pg.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(pg)
        free = available_by_node()
        have = "; ".join(f"{node[:12]}: {_describe(res, bundle)} free" for node, res in sorted(free.items()))
        raise PlacementError(
            f"no node has room for session {name!r} within {timeout_s:g} s: it needs "
            f"{_fmt(bundle)}; {have or 'no node has anything free'} (close sessions, or add nodes)"
        ) from None
    except BaseException:
        remove_placement_group(pg)
        raise
    node_id = placement_group_table(pg)["bundles_to_node_id"][0]
    return pg, str(node_id)


def alive_nodes() -> list[dict[str, Any]]:
    """The cluster's alive nodes, as ray.nodes() describes them."""
    return [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]


def available_by_node() -> dict[str, dict[str, float]]:
    """What each alive node has free now (Ray's state API)."""
    from ray._private.state import available_resources_per_node

    try:
        free: dict[str, dict[str, float]] = dict(available_resources_per_node())  # type: ignore[no-untyped-call]
    except Exception:
        return {}
    return free


def _fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{k}={_amount(k, v)}" for k, v in sorted(resources.items()))


def _amount(key: str, value: float) -> str:
    if key in ("memory", "object_store_memory"):
        return f"{value / 2**20:.0f} MiB"
    return f"{value:g}"


def _describe(resources: dict[str, float], bundle: dict[str, float]) -> str:
    return ", ".join(f"{k}={_amount(k, resources.get(k, 0))}" for k in sorted(bundle))
