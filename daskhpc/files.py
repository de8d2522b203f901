"""Files the package writes for the user running it (a named cluster's record, the audit's report)."""

from __future__ import annotations

import contextlib
import os
import tempfile


def write_atomically(path, text, mode=0o600):
    """Replace *path* with *text* so a reader sees the old file or the new one, never half of either.

    The text goes to a temporary file in the same directory, which gets *mode* before it is renamed
    into place (a private file is never readable by others, not even for a moment).
    """
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
