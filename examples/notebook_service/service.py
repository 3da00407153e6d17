"""A notebook service on sandbox_exec: the shape of a backend that ran each cell with
``exec(code, notebook_globals[notebook_id])`` in its own process, swapped onto sandboxes.

Endpoints (JSON over HTTP):

  POST   /execute                          {code, cell_id, notebook_id} -> the cell's result:
                                            stdout, stderr, plots (base64 PNG), tables (records
                                            and HTML), interactive plots (Plotly JSON), the
                                            last value as text, error type, message and
                                            traceback, execution time and count
  GET    /notebooks/{id}/variables         the namespace's variables (name, type, shape, ...)
  GET    /notebooks/{id}/variables/{name}  one value as data (JSON; a DataFrame as records)
  POST   /notebooks/{id}/checkpoint        save the notebook's state now (inside its sandbox;
                                            it is also saved after every cell, and loaded
                                            back when the notebook's interpreter starts:
                                            after a crash, a restart or a redeploy)
  POST   /notebooks/{id}/restore           load the last saved state
  POST   /notebooks/{id}/reset             a clean namespace (the preloaded stack kept)
  DELETE /notebooks/{id}                   end the notebook's interpreter (its files stay)

Run it: ``uvicorn --factory examples.notebook_service.service:create_app`` (from the
repository root), or see this folder's README.md. Nothing from a sandbox is ever unpickled or
evaluated here: outputs are JSON checked by sandbox_exec, values come as JSON or Arrow.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field, field_validator

import sandbox_exec

# What every notebook's cells find loaded: the data stack, imported once per zygote and
# shared copy-on-write by every notebook's interpreter (a warm start). No
# matplotlib.use("Agg"): the sandbox's inline backend turns the figures a cell leaves open
# into PNG outputs, as Jupyter's does (Agg would keep them to itself, as in Jupyter).
PRELUDE = """\
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
"""

_NOTEBOOK_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


# What one value may take in a response: the fetched bytes, and the JSON made from them.
VALUE_LIMIT = 8 << 20


class ExecuteRequest(BaseModel):
    code: str
    cell_id: str = Field(max_length=1024)
    notebook_id: str

    @field_validator("cell_id")
    @classmethod
    def _encodable(cls, cell_id: str) -> str:
        cell_id.encode("utf-8")  # a lone surrogate: a 422, not a response that cannot be written
        return cell_id


def cell_response(result: sandbox_exec.Result) -> dict[str, Any]:
    """The backend's response shape, from a sandbox_exec Result (outputs are nbformat v4)."""
    plots: list[str] = []
    tables: list[dict[str, Any]] = []
    interactive: list[Any] = []
    value: str | None = None
    for output in result.outputs:
        if output["output_type"] not in ("display_data", "execute_result"):
            continue
        data = output["data"]
        if "image/png" in data:
            plots.append(data["image/png"])  # base64 already, as in a stored notebook
        if "application/vnd.plotly.v1+json" in data:
            interactive.append(data["application/vnd.plotly.v1+json"])
        if "text/html" in data and "<table" in str(data["text/html"]):
            table: dict[str, Any] = {"html": data["text/html"]}
            resource = data.get("application/vnd.dataresource+json")
            if isinstance(resource, dict):
                table["records"] = resource.get("data")
                table["schema"] = resource.get("schema")
            tables.append(table)
        if output["output_type"] == "execute_result":
            value = data.get("text/plain")
    error = result.error
    return {
        "status": result.status,
        "execution_count": result.execution_count,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "result": value,
        "plots": plots,
        "tables": tables,
        "interactive_plots": interactive,
        "error": (
            None
            if error is None
            else {"type": error["ename"], "message": error["evalue"], "traceback": error["traceback"]}
        ),
        "reason": result.reason,
        "execution_time": result.duration_s,
    }


def create_app(
    root: str | None = None,
    policy: sandbox_exec.Policy | None = None,
    pool_size: int = 2,
    audit_log: str | None = None,
    data_root: str | None = None,
) -> FastAPI:
    """The service, with one Sandbox (its sessions are the notebooks) under `root`
    (SANDBOX_ROOT, else a directory sandbox_exec chooses). `audit_log` (SANDBOX_AUDIT_LOG):
    one JSON line per cell and per call (the cell's id, the code's sha256, its duration, CPU,
    memory, status and the limits in force). `data_root` (SANDBOX_DATA_ROOT): each notebook's
    uploaded files are in ``<data_root>/<notebook id>``, which its cells read, read-only, at
    ``data/<file>`` (a mount, nothing copied).

    The notebooks' state is saved after every cell and loaded back when an interpreter
    starts (Policy.checkpoint, restore_on_start): the variables survive a crash, a restart
    and a redeploy of this service, as the pickled state of the exec() backend did."""
    policy = (policy or sandbox_exec.Policy()).replace(checkpoint="after_cell", restore_on_start=True)
    data_root = data_root or os.environ.get("SANDBOX_DATA_ROOT")
    box = sandbox_exec.Sandbox(
        policy=policy,
        root=root or os.environ.get("SANDBOX_ROOT"),
        pool_size=pool_size,
        audit_log=audit_log or os.environ.get("SANDBOX_AUDIT_LOG"),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(box.close)

    app = FastAPI(title="notebook service on sandbox_exec", lifespan=lifespan)

    async def notebook(notebook_id: str) -> sandbox_exec.Session:
        if not _NOTEBOOK_ID.fullmatch(notebook_id):
            raise HTTPException(400, "a notebook id is 1-64 letters, digits, '_', '.' or '-'")
        own = policy
        if data_root is not None:  # the notebook's uploads, read-only at data/
            uploads = os.path.join(data_root, notebook_id)
            os.makedirs(uploads, mode=0o755, exist_ok=True)
            own = policy.replace(mounts=(sandbox_exec.Mount("data", uploads),))
        # Starting an interpreter blocks (a fork, or the pool's hand-over): off the loop.
        return await asyncio.to_thread(box.session, notebook_id, prelude=PRELUDE, policy=own)

    @app.post("/execute")
    async def execute_code(request: ExecuteRequest) -> dict[str, Any]:
        session = await notebook(request.notebook_id)
        result = await session.run_async(request.code, cell_id=request.cell_id)
        return {"cell_id": request.cell_id, **cell_response(result)}

    @app.get("/notebooks/{notebook_id}/variables")
    async def variables(notebook_id: str) -> list[dict[str, Any]]:
        session = await notebook(notebook_id)
        return await asyncio.to_thread(session.variables)

    @app.get("/notebooks/{notebook_id}/variables/{name}")
    async def value(notebook_id: str, name: str) -> dict[str, Any]:
        """One value as data, at most VALUE_LIMIT bytes of it: a DataFrame as records with its
        table schema (made in the sandbox as JSON, so its size is the response's), an array
        as a nested list (from .npy: its size bounds the list's items), plain data as JSON."""
        session = await notebook(notebook_id)
        kinds = {v["name"]: v["type"] for v in await asyncio.to_thread(session.variables, previews="none")}
        if name not in kinds:
            raise HTTPException(404, f"no variable {name!r} in notebook {notebook_id!r}")
        kind = {"DataFrame": "records", "ndarray": "npy"}.get(kinds[name], "json")
        try:
            fetched = await asyncio.to_thread(session.fetch, name, format=kind, max_bytes=VALUE_LIMIT)
        except sandbox_exec.CallError as e:
            raise HTTPException(422, str(e)) from None
        if kind == "records":
            return {"name": name, "kind": "table", "schema": fetched["schema"]["fields"], "records": fetched["data"]}
        if kind == "npy":
            return {"name": name, "kind": "array", "dtype": str(fetched.dtype), "value": fetched.tolist()}
        return {"name": name, "kind": "json", "value": fetched}

    @app.post("/notebooks/{notebook_id}/checkpoint")
    async def checkpoint(notebook_id: str) -> dict[str, Any]:
        session = await notebook(notebook_id)
        report = await asyncio.to_thread(session.checkpoint)
        return {key: report[key] for key in ("saved", "skipped", "bytes", "sha256")}

    @app.post("/notebooks/{notebook_id}/restore")
    async def restore(notebook_id: str) -> dict[str, Any]:
        session = await notebook(notebook_id)
        try:
            report = await asyncio.to_thread(session.restore)
        except sandbox_exec.CheckpointError as e:
            raise HTTPException(404 if e.kind == "missing" else 409, str(e)) from None
        return {"restored": report["restored"]}

    @app.post("/notebooks/{notebook_id}/reset")
    async def reset(notebook_id: str) -> dict[str, Any]:
        session = await notebook(notebook_id)
        return await asyncio.to_thread(session.reset)

    @app.delete("/notebooks/{notebook_id}")
    async def close(notebook_id: str) -> dict[str, Any]:
        session = await notebook(notebook_id)
        await asyncio.to_thread(session.close)
        return {"closed": notebook_id}

    return app
