"""The package as a whole: version, build info, error family, the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

import slabcache
from slabcache import errors
from slabcache.cli import main


def test_version_matches_native_module() -> None:
    assert slabcache.__version__ == slabcache._native.__version__
    assert slabcache.__version__.count(".") == 2


def test_build_info_and_cpu_features() -> None:
    info = slabcache._native.build_info()
    assert info["profile"] in {"release", "debug"}
    feats = slabcache._native.cpu_features()
    assert {"avx2", "avx512f", "avx512bw", "avx512vnni", "neon", "sse4.2"} <= set(feats)
    assert all(isinstance(v, bool) for v in feats.values())


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.InvalidArgumentError, ValueError),
        (errors.InvalidTypeError, TypeError),
        (errors.NotFoundError, KeyError),
        (errors.AlreadyExistsError, KeyError),
        (errors.InvalidFreeError, ValueError),
        (errors.DoubleFreeError, ValueError),
        (errors.ClosedError, ValueError),
        (errors.BufferExportedError, BufferError),
        (errors.OutOfMemoryError, MemoryError),
        (errors.StorageError, OSError),
        (errors.CorruptionError, OSError),
        (errors.LockedError, OSError),
    ],
)
def test_every_error_is_a_slabcache_error_and_a_builtin(cls: type, builtin: type) -> None:
    assert issubclass(cls, slabcache.SlabcacheError)
    assert issubclass(cls, builtin)
    assert cls.__name__ in errors.__all__


def test_not_found_message_is_readable() -> None:
    assert str(errors.NotFoundError("request 7 is unknown")) == "request 7 is unknown"


def test_cli_version_and_info(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert slabcache.__version__ in capsys.readouterr().out
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "avx2" in out and "build profile" in out
    assert "int8 kernel in use" in out


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "slabcache", "--version"], capture_output=True, text=True, check=True
    )
    assert slabcache.__version__ in out.stdout


def test_unknown_bench_suite_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "nonsense"]) == 2
