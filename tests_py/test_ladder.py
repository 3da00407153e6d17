"""The ladder rule itself: collection fails for a test with no ladder marker or two."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.a

INI = """
[pytest]
addopts = --strict-markers
markers =
    a: unit
    b: end to end
    c: adversarial
"""
CONFTEST = """
import ladder

def pytest_collection_modifyitems(config, items):
    ladder.require_one_ladder_marker(items)
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    return pytester


def test_one_marker_each_way_collects(suite):
    suite.makepyfile(
        test_fine="""
import pytest

pytestmark = pytest.mark.b

def test_module_level():
    pass

@pytest.mark.b
def test_the_same_again():
    pass

class TestC:
    pytestmark = pytest.mark.c
"""
    )
    suite.makepyfile(
        test_own="""
import pytest

@pytest.mark.a
@pytest.mark.parametrize("x", [1, 2])
def test_own(x):
    pass
"""
    )
    result = suite.runpytest("--collect-only", "-q")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*4 tests collected*"])


@pytest.mark.parametrize(
    "source,complaint",
    [
        ("def test_bare():\n    pass\n", "test_bare: no ladder marker"),
        ("import pytest\npytestmark = pytest.mark.a\n@pytest.mark.b\ndef test_two():\n    pass\n", "test_two: a, b"),
        (
            "import pytest\n@pytest.mark.c\nclass TestX:\n    @pytest.mark.a\n    def test_m(self):\n        pass\n",
            "TestX::test_m: a, c",
        ),
    ],
)
def test_no_marker_or_two_fail_collection(suite, source, complaint):
    suite.makepyfile(test_bad=source)
    result = suite.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert complaint in result.stderr.str() + result.stdout.str()


def test_a_misspelled_marker_fails(suite):
    suite.makepyfile(test_typo="import pytest\n@pytest.mark.a\n@pytest.mark.slwo\ndef test_t():\n    pass\n")
    result = suite.runpytest("--collect-only", "-q")
    assert result.ret != 0
    assert "slwo" in result.stdout.str() + result.stderr.str()
