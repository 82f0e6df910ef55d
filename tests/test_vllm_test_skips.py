"""The vLLM test plugin's skip rules (no vLLM needed): an adapter refusal becomes a skip
with its reason, a listed known difference is skipped by name, anything else still fails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slabcache import SlabcacheError, UnsupportedFeatureError
from slabcache.integrations._vllm_test_skips import KNOWN_DIFFERENCES, _unsupported

MODULE = textwrap.dedent(
    """
    from slabcache import UnsupportedFeatureError

    def test_refused_feature():
        raise UnsupportedFeatureError("slabcache adapter: KV-cache spec MambaSpec")

    def test_refused_plain_not_implemented():
        raise NotImplementedError("slabcache adapter: encoder-decoder cross attention")

    def test_refused_inside_another_error():
        try:
            raise UnsupportedFeatureError("slabcache adapter: context parallelism")
        except NotImplementedError as e:
            raise RuntimeError("scheduler construction failed") from e

    def test_other_not_implemented():
        raise NotImplementedError("something else")

    def test_real_failure():
        assert 1 == 2

    def test_decode():  # a name in KNOWN_DIFFERENCES
        assert False

    def test_passes():
        pass
    """
)


def _run(tmp_path: Path, **env: str) -> str:
    (tmp_path / "test_fake_vllm.py").write_text(MODULE)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "slabcache.integrations._vllm_test_skips"]
        + ["-p", "no:cacheprovider", "-q", "-rsf", str(tmp_path / "test_fake_vllm.py")],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=tmp_path,
    )
    return out.stdout + out.stderr


def test_unsupported_feature_error_is_in_the_family() -> None:
    assert issubclass(UnsupportedFeatureError, SlabcacheError)
    assert issubclass(UnsupportedFeatureError, NotImplementedError)


def test_refusals_skip_with_their_reason_and_real_failures_still_fail(tmp_path: Path) -> None:
    out = _run(tmp_path)
    assert "2 failed, 1 passed, 4 skipped" in out, out
    assert "unsupported: slabcache adapter: KV-cache spec MambaSpec" in out
    assert "unsupported: slabcache adapter: encoder-decoder cross attention" in out
    assert "unsupported: slabcache adapter: context parallelism" in out
    assert "FAILED test_fake_vllm.py::test_other_not_implemented" in out
    assert "FAILED test_fake_vllm.py::test_real_failure" in out
    assert KNOWN_DIFFERENCES["test_decode"] in out


def test_no_skips_switch_turns_the_rules_off(tmp_path: Path) -> None:
    out = _run(tmp_path, SLABCACHE_VLLM_NO_SKIPS="1")
    assert "6 failed, 1 passed" in out, out


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (UnsupportedFeatureError("x"), "x"),
        (NotImplementedError("slabcache adapter: y"), "slabcache adapter: y"),
        (NotImplementedError("y"), None),
        (ValueError("slabcache adapter: z"), None),
    ],
)
def test_classification(exc: BaseException, expected: str | None) -> None:
    assert _unsupported(exc) == expected
