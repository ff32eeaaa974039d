"""What the analyst reads when something fails: the message, with file names instead of paths.

Errors from the readers name the file they could not read by its full path; on the server that is
Gradio's temporary copy of an upload (``/tmp/gradio/3f…/scene.tif``), which means nothing to the
analyst and shows the server's folders. :func:`for_user` keeps only each path's file name.
"""

from __future__ import annotations

import re

PATH = re.compile(r"""(?<![\w.:/-])(?:[A-Za-z]:)?(?:[/\\][^\s/\\'"`,;:()<>|]+)+[/\\]([^\s/\\'"`,;:()<>|]+)""")
"""An absolute POSIX or Windows path of two parts or more; group 1 is its last part (the name)."""


def for_user(message: str) -> str:
    """``message`` with each absolute path replaced by its file name."""
    return PATH.sub(lambda match: match.group(1), message)
