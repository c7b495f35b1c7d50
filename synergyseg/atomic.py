"""Writing files and folders under a temporary name, moved into place only once complete.

Every writer in synergyseg goes through here, so an interrupted run never leaves a half-written
file under its final name.
"""

import contextlib
import json
import os
import shutil
import tempfile


def remove(path):
    """Deletes the file, link or folder at `path`, if any."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_output(path):
    """Yields a temporary path beside `path`; on success it replaces `path`, on error it is deleted.

    A reader never sees a half-written export: the temporary name starts with a dot and the final
    move is one `os.replace` (an existing folder at `path` is removed just before it).

    Example:
        >>> with atomic_output("out/model.tflite") as tmp:
        ...     open(tmp, "wb").write(data)
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    tmp = os.path.join(staging, os.path.basename(path))
    try:
        yield tmp
        if not os.path.lexists(tmp):
            raise RuntimeError(f"nothing was written for {path}")
        if os.path.isdir(path) and not os.path.islink(path):
            remove(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text(path, text):
    """Writes `text` to `path` atomically; returns `path`."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return path


def write_json(path, values, sort_keys=True):
    """Writes `values` as indented JSON to `path` atomically; returns `path`.

    NaN is not valid JSON, so it is refused: absent values must be None.
    """
    return write_text(path, json.dumps(values, indent=2, sort_keys=sort_keys, allow_nan=False) + "\n")
