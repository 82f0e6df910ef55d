"""Checks a built wheel (or sdist) holds what a user needs, before it is published.

    python scripts/check_wheel.py dist/slabcache-X-cp311-abi3-*.whl --version X \
        --policy manylinux_2_17_x86_64
    python scripts/check_wheel.py --sdist dist/slabcache-X.tar.gz

Exits 1 naming every problem found. `auditwheel show` (run by build_wheel.sh)
checks the glibc symbol versions; this checks files, tags and metadata, and
that the bundled LD_PRELOAD library really defines malloc (built with the
`preload` feature) for the wheel's architecture.
"""

from __future__ import annotations

import argparse
import configparser
import io
import sys
import tarfile
import zipfile
from email.parser import Parser

PYTHONS = ("3.11", "3.12", "3.13")


def _elf_dynamic_symbols(data: bytes) -> tuple[str, set[str]]:
    """The ELF machine and the names of the defined dynamic symbols."""
    from elftools.elf.elffile import ELFFile  # pyelftools: comes with auditwheel

    elf = ELFFile(io.BytesIO(data))
    dynsym = elf.get_section_by_name(".dynsym")
    defined = {s.name for s in dynsym.iter_symbols() if s["st_shndx"] != "SHN_UNDEF"}
    return elf["e_machine"], defined


def check_wheel(path: str, version: str | None, policy: str | None) -> list[str]:
    problems: list[str] = []
    name = path.rsplit("/", 1)[-1]
    tags = name[: -len(".whl")].split("-")
    if len(tags) != 5 or tags[0] != "slabcache":
        return [f"{name}: not a slabcache wheel name"]
    _, wheel_version, py_tag, abi_tag, plat_tag = tags
    if version and wheel_version != version:
        problems.append(f"wheel version {wheel_version}, Cargo says {version}")
    if (py_tag, abi_tag) != ("cp311", "abi3"):
        problems.append(f"tags {py_tag}-{abi_tag}, expected cp311-abi3")
    if policy and policy not in plat_tag.split("."):
        problems.append(f"platform tag {plat_tag} lacks {policy}")

    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        dist_info = f"slabcache-{wheel_version}.dist-info"
        need = [
            "slabcache/__init__.py",
            "slabcache/cli.py",
            "slabcache/bundled.py",
            "slabcache/_native.abi3.so",
            "slabcache/_native.pyi",
            "slabcache/py.typed",
            "slabcache/lib/libslabcache_malloc.so",
            "slabcache/include/slabcache.h",
            f"{dist_info}/METADATA",
            f"{dist_info}/entry_points.txt",
        ]
        problems += [f"missing {n}" for n in need if n not in names]
        for lic in ("LICENSE-MIT", "LICENSE-APACHE"):
            if not any(n.startswith(dist_info) and n.endswith(lic) for n in names):
                problems.append(f"license file {lic} is not in {dist_info}")
        stray = [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".o", ".a"))]
        problems += [f"stray file {n}" for n in stray]

        if "slabcache/lib/libslabcache_malloc.so" in names:
            machine, syms = _elf_dynamic_symbols(z.read("slabcache/lib/libslabcache_malloc.so"))
            want_machine = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}
            arch = plat_tag.split(".")[0].split("_", 3)[-1]
            if arch in want_machine and machine != want_machine[arch]:
                problems.append(f"preload library is {machine}, wheel is {arch}")
            for sym in ("malloc", "free", "calloc", "realloc", "posix_memalign", "sc_malloc"):
                if sym not in syms:
                    problems.append(
                        f"preload library does not define {sym} (built without preload?)"
                    )

        meta = Parser().parsestr(z.read(f"{dist_info}/METADATA").decode())
        if meta["Version"] != wheel_version:
            problems.append(f"METADATA Version {meta['Version']} != {wheel_version}")
        if meta["Requires-Python"] != ">=3.11":
            problems.append(f"Requires-Python is {meta['Requires-Python']!r}")
        classifiers = set(meta.get_all("Classifier") or [])
        for v in PYTHONS:
            if f"Programming Language :: Python :: {v}" not in classifiers:
                problems.append(f"no classifier for Python {v}")
        if not meta.get_all("Project-URL"):
            problems.append("no Project-URL")
        if not (meta["License-Expression"] or meta["License"]):
            problems.append("no license in METADATA")
        entry_points = configparser.ConfigParser()
        entry_points.read_string(z.read(f"{dist_info}/entry_points.txt").decode())
        script = entry_points.get("console_scripts", "slabcache", fallback=None)
        if script != "slabcache.cli:main":
            problems.append(f"console script slabcache is {script!r}")
    return problems


def check_sdist(path: str) -> list[str]:
    problems: list[str] = []
    with tarfile.open(path) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    need = [
        "pyproject.toml",
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "rust/core/Cargo.toml",
        "rust/python/Cargo.toml",
        "python/slabcache/__init__.py",
        "python/slabcache/_native.pyi",
        "python/slabcache/py.typed",
    ]
    problems += [f"sdist lacks {n}" for n in need if n not in names]
    staged = [n for n in names if n.startswith(("python/slabcache/lib/", "target/"))]
    problems += [f"sdist carries a build artifact: {n}" for n in staged]
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path")
    ap.add_argument("--sdist", action="store_true", help="PATH is an sdist (.tar.gz)")
    ap.add_argument("--version", help="the version the wheel must have")
    ap.add_argument("--policy", help="a platform tag the wheel must carry")
    args = ap.parse_args()
    problems = (
        check_sdist(args.path) if args.sdist else check_wheel(args.path, args.version, args.policy)
    )
    for p in problems:
        print(f"check_wheel: {args.path}: {p}", file=sys.stderr)
    if not problems:
        print(f"check_wheel: {args.path}: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
