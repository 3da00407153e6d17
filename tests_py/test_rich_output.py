"""Ladder B: rich output as a Jupyter kernel gives it: the inline matplotlib backend, the
display protocol through IPython.display, pandas, IPython's input rules."""

from __future__ import annotations

import base64

import pytest

from sandbox_exec import Policy

pytestmark = pytest.mark.b
pytest.importorskip("matplotlib")


def png_size(b64: str) -> tuple[int, int]:
    raw = base64.b64decode(b64)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


def test_open_figures_are_published_at_the_end_of_the_cell_and_closed(session):
    r = session.run("import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 3, 2])\nprint('drawn')")
    assert [o["output_type"] for o in r.outputs] == ["stream", "display_data"]
    fig = r.outputs[1]
    assert fig["data"]["text/plain"] == "<Figure size 640x480 with 1 Axes>"
    width, height = png_size(fig["data"]["image/png"])
    assert 400 < width < 700 and 300 < height < 500  # 6.4x4.8 in at 100 dpi, tight bbox
    r = session.run("len(plt.get_fignums())")
    assert r.outputs == [
        {"output_type": "execute_result", "execution_count": 2, "data": {"text/plain": "0"}, "metadata": {}}
    ]


def test_plt_show_publishes_at_once_and_no_gui_backend(session):
    r = session.run(
        "import matplotlib, matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\n"
        "print('after show')\nmatplotlib.get_backend()"
    )
    kinds = [o["output_type"] for o in r.outputs]
    assert kinds == ["display_data", "stream", "execute_result"]
    assert r.outputs[2]["data"]["text/plain"] == "'module://sandbox_exec._worker.mpl_backend'"


def test_figure_format_and_dpi_come_from_the_policy(sandbox):
    s = sandbox.session("svg-figures", policy=Policy(figure_format="svg"))
    r = s.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])")
    assert "image/svg+xml" in r.outputs[-1]["data"] and "<svg" in r.outputs[-1]["data"]["image/svg+xml"]
    s.close()
    s = sandbox.session("dpi-figures", policy=Policy(figure_dpi=50))
    r = s.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])")
    width, _ = png_size(r.outputs[-1]["data"]["image/png"])
    assert width < 350  # half of the default 100 dpi
    s.close()
    s = sandbox.session("retina-figures", policy=Policy(figure_format="retina"))
    r = s.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])")
    out = r.outputs[-1]
    width, _ = png_size(out["data"]["image/png"])
    assert out["metadata"]["image/png"]["width"] == width // 2
    s.close()


def test_ipython_display_objects_route_into_the_cell(session):
    pytest.importorskip("IPython")
    r = session.run(
        "from IPython.display import display, HTML, Markdown, JSON, SVG, clear_output\n"
        "print('gone')\nclear_output(wait=True)\n"
        "display(HTML('<b>b</b>'), Markdown('*m*'))\n"
        "h = display(JSON({'a': 1}), display_id='j')\nh.update(JSON({'a': 2}))"
    )
    assert [o["output_type"] for o in r.outputs] == ["display_data", "display_data", "display_data"]
    assert r.outputs[0]["data"]["text/html"] == "<b>b</b>"
    assert r.outputs[1]["data"]["text/markdown"] == "*m*"
    assert r.outputs[2]["data"]["application/json"] == {"a": 2}
    assert "gone" in r.stdout  # the stream text, concatenated, keeps what clear_output removed


def test_pandas_dataframe_as_jupyter_shows_it(session):
    pytest.importorskip("pandas")
    r = session.run("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    data = r.outputs[0]["data"]
    assert data["text/plain"] == "   a  b\n0  1  x\n1  2  y"
    assert data["text/html"].startswith("<div>") and "<table" in data["text/html"]
    # a notebook shows 20 columns of a wide frame, not a terminal's width
    r = session.run(
        "pd.DataFrame([list(range(30))]).to_string().count('...') == 0, pd.get_option('display.max_columns')"
    )
    assert r.outputs[0]["data"]["text/plain"].endswith(", 20)")


def test_ipython_input_rules(session):
    assert session.run("    x = 1\n    x + 1").outputs[0]["data"]["text/plain"] == "2"  # dedent
    assert session.run("%matplotlib inline\n3").outputs[0]["data"]["text/plain"] == "3"
    assert session.run("!echo shell-out").stdout == "shell-out\n"
    r = session.run("%timeit 1")
    assert r.status == "error" and r.error["ename"] == "SyntaxError"


def test_object_displaying_itself_as_last_expression(session):
    r = session.run("class Shows:\n    def _ipython_display_(self):\n        display('shown by itself')\nShows()")
    assert r.outputs == [{"output_type": "display_data", "data": {"text/plain": "'shown by itself'"}, "metadata": {}}]


def test_display_works_without_ipython(sandbox):
    # IPython made unimportable inside the session: text/plain falls back to repr() and the
    # display protocol keeps working.
    s = sandbox.session("no-ipython", prelude="import sys\nsys.modules['IPython'] = None")
    try:
        value = {f"key{i}": list(range(12)) for i in range(6)}
        r = s.run(f"{value!r}")
        assert r.outputs[0]["data"]["text/plain"] == repr(value)  # IPython would wrap lines
        r = s.run("class R:\n    def _repr_html_(self): return '<i>r</i>'\ndisplay(R())")
        assert r.outputs[0]["data"]["text/html"] == "<i>r</i>"
        r = s.run("import IPython")
        assert r.status == "error" and r.error["ename"] in ("ImportError", "ModuleNotFoundError")
    finally:
        s.close()
