#!/usr/bin/env python3
"""Pins the mlm image of kustomize overlays to the digest a push produced.

    scripts/pin-image-digest.py NAME REPOSITORY@sha256:DIGEST OVERLAY_DIR...

`make images` runs it after `docker push` with the reference the registry returned
(`docker inspect --format '{{index .RepoDigests 0}}'`): in each overlay, the `images:` entry for
NAME (the image the base manifests name) gets `digest: sha256:...` in place of its `newTag`, and
`newName: REPOSITORY` when the push went elsewhere. Kustomize then writes
`REPOSITORY@sha256:...` into every manifest, so the cluster runs exactly the bytes that were built,
whatever later happens to the tag. The overlay's other lines and comments are kept.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REFERENCE = re.compile(r"^(?P<repository>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")
USAGE = "usage: pin-image-digest.py NAME REPOSITORY@sha256:<64 hex digits> OVERLAY_DIR..."


def pin(kustomization: Path, name: str, repository: str, digest: str) -> bool:
    """Pins `name` in one kustomization.yaml; whether it had an `images:` entry for it."""
    lines = kustomization.read_text().splitlines(keepends=True)
    out: list[str] = []
    found = False
    index = 0
    while index < len(lines):
        line = lines[index]
        out.append(line)
        index += 1
        match = re.match(r"^(\s*)- name: (\S+)\s*$", line)
        if not match or match.group(2) != name:
            continue
        found = True
        indent = match.group(1) + "  "
        # The entry's own fields: keep all but the tag or an earlier pin, then add this one.
        while index < len(lines) and lines[index].startswith(indent):
            if not lines[index].strip().startswith(("digest:", "newName:", "newTag:")):
                out.append(lines[index])
            index += 1
        if repository != name:
            out.append(f"{indent}newName: {repository}\n")
        out.append(f"{indent}digest: {digest}\n")
    if found:
        kustomization.write_text("".join(out))
    return found


def main(argv: list[str]) -> int:
    reference = REFERENCE.match(argv[1]) if len(argv) >= 3 else None
    if reference is None:
        print(f"pin-image-digest: error: {USAGE}", file=sys.stderr)
        return 2
    for overlay in argv[2:]:
        path = Path(overlay) / "kustomization.yaml"
        if not pin(path, argv[0], reference["repository"], reference["digest"]):
            print(f"pin-image-digest: error: {path} has no image {argv[0]}", file=sys.stderr)
            return 2
        print(f"{path}: {argv[0]} -> {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
