"""Parse HCL with HashiCorp's parser in a process of its own: ``python hclparse.py``.

``pygohcl`` runs Go inside Python, and Go ends the whole process on a fatal error: a
file nested about 100,000 levels deep overflows the goroutine stack and the process
aborts (SIGABRT), whatever Python tries to catch. ``Validator.parse`` therefore sends
files to this script running as a child process (stdlib and ``pygohcl`` only): a crash
ends the child, never the worker, and the next parse starts a new child.

Protocol, one line each way per request: a JSON list of file contents in; out
``{"ok": true}`` or ``{"index": i, "kind": "syntax"|"depth", "message": "..."}`` for the
first file that does not parse. The child serves requests until its stdin closes.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def check(contents: list[str]) -> dict[str, Any]:
    """Parse each content; describe the first that fails."""
    import pygohcl

    for index, content in enumerate(contents):
        try:
            pygohcl.loads(content)
        except (pygohcl.HCLParseError, pygohcl.HCLInternalError) as e:
            return {"index": index, "kind": "syntax", "message": str(e)}
        except RecursionError:
            # Go parsed it; Python could not read back a result nested this deep.
            return {"index": index, "kind": "depth",
                    "message": "nested too deeply to be read back"}
    return {"ok": True}


def main() -> int:
    """Answer one line per request line until stdin closes."""
    sys.setrecursionlimit(1000)
    for line in sys.stdin:
        sys.stdout.write(json.dumps(check(json.loads(line))) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
