"""Ladder B: the example notebook service (examples/notebook_service, issue 10 item 9) driven
over HTTP by a real client: a uvicorn server on a loopback port, httpx's async client, many
requests in parallel across notebooks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx  # the test extra (with fastapi and uvicorn): these tests never skip
import pytest

from conftest import REPO
from http_service import serve

pytestmark = pytest.mark.b

sys.path.insert(0, str(REPO))
from examples.notebook_service.service import create_app  # noqa: E402


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("service")
    app = create_app(root=str(root / "sessions"), pool_size=1, audit_log=str(root / "audit.jsonl"))
    with serve(app) as url:
        yield url, root / "audit.jsonl"


def execute(client: Any, notebook: str, cell: str, code: str) -> Any:
    return client.post("/execute", json={"notebook_id": notebook, "cell_id": cell, "code": code})


async def _run_notebook(client: Any, notebook: str, n: int) -> list[dict[str, Any]]:
    cells = [
        f"x = {n}\nprint('hello from', x)",
        "df = pd.DataFrame({'a': range(5), 'b': [x] * 5})\ndf",
        "plt.plot([1, 2, 3]); plt.title(str(x))",
        "1 / 0",
        "x * 10",
    ]
    out = []
    for i, code in enumerate(cells):
        response = await execute(client, notebook, f"c{i}", code)
        assert response.status_code == 200, response.text
        out.append(response.json())
    return out


def test_notebooks_run_in_parallel_over_http(service: tuple[str, Path]) -> None:
    url, audit_log = service

    async def main() -> list[list[dict[str, Any]]]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            return await asyncio.gather(*(_run_notebook(client, f"nb-{n}", n) for n in range(4)))

    for n, (hello, table, plot, error, value) in enumerate(asyncio.run(main())):
        assert hello["status"] == "ok" and hello["stdout"] == f"hello from {n}\n" and hello["cell_id"] == "c0"
        assert table["tables"] and "<table" in table["tables"][0]["html"]
        assert plot["plots"] and base64.b64decode(plot["plots"][0]).startswith(b"\x89PNG")
        assert error["status"] == "error"
        assert error["error"]["type"] == "ZeroDivisionError" and error["error"]["traceback"]
        assert value["result"] == str(n * 10) and value["execution_time"] > 0
    # Every cell has its audit record, under the caller's cell id, the code hashed.
    records = [json.loads(line) for line in audit_log.read_text().splitlines()]
    cells = {(r["session"], r["cell_id"]): r for r in records if r["kind"] == "cell"}
    for n in range(4):
        assert cells[(f"nb-{n}", "c3")]["status"] == "error"
        assert (
            cells[(f"nb-{n}", "c0")]["code_sha256"]
            == hashlib.sha256(f"x = {n}\nprint('hello from', x)".encode()).hexdigest()
        )


def test_variables_and_values(service: tuple[str, Path]) -> None:
    url = service[0]
    with httpx.Client(base_url=url, timeout=120) as client:
        assert (
            execute(
                client, "vars", "c0", "df = pd.DataFrame({'a': [1, 2], 'b': ['u', 'v']})\narr = np.arange(3)\nn = 5"
            ).status_code
            == 200
        )
        listed = {v["name"]: v for v in client.get("/notebooks/vars/variables").json()}
        assert listed["df"]["type"] == "DataFrame" and listed["df"]["shape"] == [2, 2]
        assert listed["arr"]["shape"] == [3] and listed["n"]["type"] == "int"
        assert "np" not in listed and "pd" not in listed  # the preloaded stack is not a variable
        table = client.get("/notebooks/vars/variables/df").json()
        assert table["kind"] == "table" and table["records"] == [
            {"index": 0, "a": 1, "b": "u"},
            {"index": 1, "a": 2, "b": "v"},
        ]
        assert client.get("/notebooks/vars/variables/arr").json() == {
            "name": "arr",
            "kind": "array",
            "dtype": "int64",
            "value": [0, 1, 2],
        }
        assert client.get("/notebooks/vars/variables/n").json()["value"] == 5
        assert client.get("/notebooks/vars/variables/missing").status_code == 404
        # Another notebook's namespace is its own.
        assert "df" not in {v["name"] for v in client.get("/notebooks/other/variables").json()}


def test_reset_and_bad_ids(service: tuple[str, Path]) -> None:
    url = service[0]
    with httpx.Client(base_url=url, timeout=120) as client:
        execute(client, "r", "c0", "y = 1")
        assert client.post("/notebooks/r/reset").status_code == 200
        after = execute(client, "r", "c1", "y").json()
        assert after["status"] == "error" and after["error"]["type"] == "NameError"
        assert execute(client, "r", "c2", "float(np.zeros(2).sum())").json()["result"] == "0.0"  # the stack is kept
        assert execute(client, "../etc", "c0", "1").status_code == 400


def test_state_survives_a_redeploy_and_uploads_are_read_in_place(tmp_path: Path) -> None:
    # The exec() backend pickled each notebook's variables after every cell and loaded them
    # after a restart; this one checkpoints inside each sandbox and restores at start.
    data = tmp_path / "uploads"
    (data / "nb").mkdir(parents=True)
    (data / "nb" / "sales.csv").write_text("region,amount\nnorth,3\nsouth,4\n")
    for path in (tmp_path, data, data / "nb"):
        path.chmod(0o755)
    (data / "nb" / "sales.csv").chmod(0o644)
    settings = {"root": str(tmp_path / "sessions"), "pool_size": 0, "data_root": str(data)}
    with serve(create_app(**settings)) as url, httpx.Client(base_url=url, timeout=120) as client:
        r = execute(
            client, "nb", "c0", "df = pd.read_csv('data/sales.csv')\ntotal = int(df.amount.sum())\ntotal"
        ).json()
        assert r["status"] == "ok" and r["result"] == "7", r
        denied = execute(client, "nb", "c1", "open('data/sales.csv', 'a').write('x')").json()
        assert denied["status"] == "error" and denied["error"]["type"] in ("PermissionError", "OSError")
        assert client.post("/notebooks/nb/checkpoint").json()["saved"] == ["df", "total"]
    # A new service process on the same root (a redeploy): the notebook's variables are back.
    with serve(create_app(**settings)) as url, httpx.Client(base_url=url, timeout=120) as client:
        again = execute(client, "nb", "c2", "total, len(df)").json()
        assert again["status"] == "ok" and again["result"] == "(7, 2)", again
        assert client.post("/notebooks/fresh/restore").status_code == 404
