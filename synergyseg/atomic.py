"""Writing files and folders under a temporary name, moved into place only once complete.

Every writer in synergyseg goes through here, so an interrupted run never leaves a half-written
file under its final name.
"""

import contextlib
import json
import os
import re
import shutil
import tempfile

# A staging entry is `.<name>.partial-<pid>-<mkdtemp suffix>`: the id of the process writing it
# tells a killed write's leftover (process gone) from a write in progress (process alive).
_STAGING = re.compile(r"^\..+\.partial-(\d+)-[a-z0-9_]+$")
_cleaned_parents = set()  # folders this process has already cleared of dead writes' staging


def remove(path):
    """Deletes the file, link or folder at `path`, if any."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def pid_alive(pid):
    """True if a process with id `pid` exists (this user's or another's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_dead_staging(parent, pattern=_STAGING):
    """Deletes the entries of folder `parent` whose name matches `pattern` and whose process,
    the integer in the pattern's first group, is gone: what a killed write left behind.

    A live process's staging is never touched. Returns the paths removed, sorted.
    """
    removed = []
    for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else ():
        match = pattern.match(name)
        if match and not pid_alive(int(match.group(1))):
            path = os.path.join(parent, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_output(path):
    """Yields a temporary path beside `path`; on success it replaces `path`, on error it is deleted.

    A reader never sees a half-written export: the temporary name starts with a dot and the final
    move is one `os.replace` (an existing folder at `path` is removed just before it). The
    temporary name holds this process's id; the first write into a folder deletes the staging
    that killed processes left there (see `remove_dead_staging`).

    Example:
        >>> with atomic_output("out/model.tflite") as tmp:
        ...     open(tmp, "wb").write(data)
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    if parent not in _cleaned_parents:  # once per folder: a listing per file would cost O(n^2)
        remove_dead_staging(parent)
        _cleaned_parents.add(parent)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.partial-{os.getpid()}-",
                               dir=parent)
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
