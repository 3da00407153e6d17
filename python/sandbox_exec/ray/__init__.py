"""Sessions on a Ray cluster: the ``ray`` extra (``pip install 'sandbox_exec[ray]'``).

``RaySandbox`` offers ``Sandbox``'s API (``session()``, ``run()``, ``run_async()``,
``interrupt()``, ``restart()``, ``close()``, the state calls, the same ``Result``) for
sessions that live on the nodes of a Ray cluster. Underneath (docs/scaling.md):

- **One host actor per node** (``_NodeHost``), pinned to its node, owning an ordinary local
  ``Sandbox``: every session on that node is started, contained and limited by it exactly
  as on one machine (namespaces, seccomp, Landlock, cgroups, the host-id per session, warm
  starts from the node's zygotes). Ray carries calls; it adds no isolation and takes none.
- **Placement by Ray's scheduler**: a session reserves a one-bundle placement group —
  one unit of the node's "sandbox slots" resource (``ray start --resources
  '{"sandbox_slots": N}'``: the node's configured capacity) and the policy's
  ``memory_bytes`` of Ray's ``memory`` resource — and lives on the node Ray put that
  bundle on. A bundle that no node could ever hold is refused at once; one that does not
  fit now is refused after ``placement_timeout_s``; either as ``PlacementError``.
- **Sticky sessions**: every call of a session goes to its node's host, by name.
- **Streaming**: a cell with ``on_output`` runs as a Ray streaming generator; its events
  reach the caller while the cell runs, in order, shaped as locally.
- **Node loss**: when the node (or its host process) dies, the cell that was running and
  every later ``run()`` of its sessions return status ``"lost"`` (``Result.reason`` says
  which node and why); other calls raise ``SessionLostError``. ``restart()`` places the
  session again, on any node with room; with ``Policy(restore_on_start=True)`` and a
  ``root`` on storage every node shares, it starts from the session's last checkpoint.

The trust boundary is the local Sandbox's, on each node: the cell's output is parsed there
by the same guarded readers. What crosses Ray between a host and the caller is plain data
the host built itself (dicts, lists, strings, numbers), checked again on arrival; errors
cross as a class name and a message, never as a pickled exception. A Ray cluster is one
trust domain (any node can run code on any other): every node must be as trusted as the
backend.
"""

from __future__ import annotations

try:
    import ray  # noqa: F401
except ImportError as e:  # pragma: no cover - the extra is installed in every test environment
    raise ImportError("sandbox_exec.ray needs Ray: pip install 'sandbox_exec[ray]'") from e

from ._errors import PlacementError, SessionLostError
from ._placement import SLOT_RESOURCE
from ._sandbox import RaySandbox
from ._session import RaySession

__all__ = ["SLOT_RESOURCE", "PlacementError", "RaySandbox", "RaySession", "SessionLostError"]
