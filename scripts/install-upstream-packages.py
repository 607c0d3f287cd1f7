"""Installs the side environments of tests/conformance/upstream-packages.txt into DIR/NAME.

Usage: python scripts/install-upstream-packages.py LIST DIR

Each environment is installed with `pip install --no-deps --target` under a temporary name and
renamed into place when complete, so an interrupted install is redone, never half-used. One that
is already there with the same requirements is left alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REQUIREMENTS_FILE = ".requirements"


def read_list(path: Path) -> dict[str, list[str]]:
    """NAME -> requirements, from the list file (comments and blank lines skipped)."""
    environments: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 2:
            raise SystemExit(f"{path}:{number}: expected NAME REQUIREMENT..., got {line!r}")
        environments[fields[0]] = fields[1:]
    return environments


def install(name: str, requirements: list[str], root: Path) -> None:
    target = root / name
    wanted = "\n".join(requirements) + "\n"
    marker = target / REQUIREMENTS_FILE
    if marker.is_file() and marker.read_text() == wanted:
        return
    partial = root / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    print(f"installing upstream side environment {name}: {' '.join(requirements)}")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--target", str(partial), *requirements],
        check=True,
    )  # fmt: skip
    (partial / REQUIREMENTS_FILE).write_text(wanted)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    listing, root = Path(argv[0]), Path(argv[1])
    root.mkdir(parents=True, exist_ok=True)
    for name, requirements in read_list(listing).items():
        install(name, requirements, root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
