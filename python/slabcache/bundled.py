"""Files the wheel ships beside the extension, and where to find them.

The release wheel (``scripts/build_wheel.sh``) carries, inside the package:

- ``lib/libslabcache_malloc.so``: the slab allocator as a C library that also
  defines ``malloc``/``free``/..., for ``LD_PRELOAD``;
- ``include/slabcache.h``: its C header (``sc_malloc``, ``sc_free``, ...).

An install built from source (``pip install .``, an editable install, the
sdist) builds only the Python extension, so it has neither file; the
functions below then raise :class:`~slabcache.errors.NotBundledError` saying
how to get them.

    >>> from slabcache import bundled
    >>> bundled.package_dir().name
    'slabcache'
"""

from __future__ import annotations

from pathlib import Path

from .errors import NotBundledError

__all__ = [
    "PRELOAD_LIBRARY_NAME",
    "NotBundledError",
    "c_header",
    "extension_module",
    "package_dir",
    "preload_library",
    "source_checkout",
]

PRELOAD_LIBRARY_NAME = "libslabcache_malloc.so"

# The command that builds the library from a clone (the release script runs the
# same build with a portable linker).
BUILD_COMMAND = "cargo build --release -p slabcache-malloc --features preload"


def package_dir() -> Path:
    """The directory of the installed ``slabcache`` package."""
    return Path(__file__).resolve().parent


def extension_module() -> Path:
    """The compiled extension (``_native*.so``) this process imported."""
    from . import _native

    return Path(_native.__file__).resolve()


def source_checkout() -> Path | None:
    """The repository root when the package is imported from a clone, else ``None``."""
    root = package_dir().parent.parent
    if (root / "rust" / "malloc" / "Cargo.toml").is_file():
        return root
    return None


def preload_library() -> Path:
    """The bundled ``LD_PRELOAD`` allocator library.

    Raises :class:`NotBundledError` (a ``FileNotFoundError``) with the command
    that builds it when this install has none.

        >>> try:
        ...     path = preload_library()
        ... except NotBundledError as e:
        ...     path = None
        >>> path is None or path.name == PRELOAD_LIBRARY_NAME
        True
    """
    path = package_dir() / "lib" / PRELOAD_LIBRARY_NAME
    if path.is_file():
        return path
    raise NotBundledError(_missing_library_message())


def c_header() -> Path:
    """``slabcache.h``: the bundled copy, or the clone's own when run from a checkout."""
    path = package_dir() / "include" / "slabcache.h"
    if path.is_file():
        return path
    root = source_checkout()
    if root is not None:
        return root / "rust" / "malloc" / "include" / "slabcache.h"
    raise NotBundledError(
        "slabcache.h is not part of this install (it was built from source without the "
        "release script); install the binary wheel (pip install --only-binary slabcache "
        "slabcache) or take rust/malloc/include/slabcache.h from a clone"
    )


def _missing_library_message() -> str:
    root = source_checkout()
    if root is not None:
        built = root / "target" / "release" / PRELOAD_LIBRARY_NAME
        return (
            f"the LD_PRELOAD library is not bundled in this source checkout's package "
            f"({package_dir()}): only the release wheel carries it. Build it with "
            f"`{BUILD_COMMAND}` in {root} and use {built}, or build the wheel with "
            f"scripts/build_wheel.sh and install that"
        )
    return (
        "the LD_PRELOAD library is not part of this install (it was built from source, "
        "which builds only the Python extension). Install the binary wheel "
        "(pip install --only-binary slabcache slabcache), or build the library from a "
        f"clone with `{BUILD_COMMAND}` and use target/release/{PRELOAD_LIBRARY_NAME}"
    )
