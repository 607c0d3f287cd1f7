"""Process set-up of the `mlm` command: TensorFlow starts without its console noise.

TensorFlow 2.21 prints several lines when it is imported and when it first looks for a GPU: the
oneDNN notice, "Could not find cuda drivers", the CPU-instructions banner, absl's "All log
messages before absl::InitializeLog() ..." and, on a machine without a GPU, "failed call to
cuInit". Most of them are written before absl's logging is initialised, so `TF_CPP_MIN_LOG_LEVEL`
cannot hide them. `quiet_tensorflow` therefore (1) sets `TF_CPP_MIN_LOG_LEVEL=2` (unless set) for
what TensorFlow logs later, (2) lowers absl's Python logger to errors, and (3) installs an import
hook: the first `import tensorflow` runs, together with the GPU probe, with the process's stderr
(file descriptor 2) captured, and whatever was captured is written back except the known start-up
lines. Nothing is imported here, so `mlm --help` stays fast; steps that never import TensorFlow
(tokenize, shard) pay nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

# The start-up lines: absl/glog INFO and WARNING records, the CPU-instructions banner, absl's
# pre-initialisation notice, and the CUDA probe's errors on a machine without a (usable) GPU.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] .*"
    r"|E\d{4} [\d:.]+ +\d+ \S+:\d+\] .*(cuInit|Unable to register cu\w+ factory).*"
    r"|To enable the following instructions: .*)$"
)


def filter_noise(text: str) -> str:
    """`text` without the lines TensorFlow prints when it starts (see `NOISE`)."""
    return "".join(line for line in text.splitlines(True) if not NOISE.match(line.rstrip("\n")))


@contextmanager
def _captured_stderr() -> Iterator[None]:
    """Captures file descriptor 2 (C++ and Python writes alike); writes back what is not noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = filter_noise(capture.read().decode("utf-8", errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of `tensorflow` and its GPU probe with stderr captured."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # The module keeps the real loader (resources, reloading): this one only wraps the start.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        with _captured_stderr():
            self.loader.exec_module(module)
            # The first device query initialises CUDA (cuInit); do it now, while captured. It
            # lists devices without creating them, so GPU and strategy settings still apply.
            module.config.list_physical_devices("GPU")


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` the normal way and hands it to `_QuietLoader`; then steps aside."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow() -> None:
    """Makes the TensorFlow this process imports later start quietly (see the module docstring).

    Call it before TensorFlow is imported (it does nothing once it is); environment settings the
    user made (`TF_CPP_MIN_LOG_LEVEL`) are kept.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("absl").setLevel(logging.ERROR)
    if "tensorflow" in sys.modules or any(
        isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path
    ):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())


# A process's private temporary folder: `mlm-<pid>-<random>` in the system's temporary directory.
_PRIVATE_TEMPDIR = re.compile(r"^mlm-(\d+)-")


@contextmanager
def private_tempdir() -> Iterator[str]:
    """Points `tempfile` at a folder of this process for the block, and removes it afterwards.

    Everything a step puts in temporary space (mlm's staging and scratch, Keras' temporary
    files, TensorFlow's autograph modules) then lives in `$TMPDIR/mlm-<pid>-<random>`, which
    goes when the block ends, however it ends. A process killed with SIGKILL cannot clean up:
    folders of processes that no longer run are removed when the next one starts.
    """
    base = tempfile.gettempdir()
    remove_orphaned_tempdirs(base)
    root = tempfile.mkdtemp(prefix=f"mlm-{os.getpid()}-", dir=base)
    previous = tempfile.tempdir
    tempfile.tempdir = root
    try:
        yield root
    finally:
        tempfile.tempdir = previous
        _remove_tree(root)


def remove_orphaned_tempdirs(base: str) -> list[str]:
    """Removes the private temporary folders in `base` whose process is gone; returns them."""
    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        match = _PRIVATE_TEMPDIR.match(name)
        if match and not process_running(int(match.group(1))):
            _remove_tree(os.path.join(base, name))
            removed.append(name)
    return removed


def process_running(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (in this PID namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
