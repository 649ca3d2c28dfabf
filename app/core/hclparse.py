"""Parse HCL files with HashiCorp's parser in a process of its own: ``python hclparse.py``.

``pygohcl`` runs Go inside Python, and Go ends the whole process on a fatal error: a
file nested about 100,000 levels deep overflows the goroutine stack and the process
aborts (SIGABRT), whatever Python tries to catch. ``Validator.parse`` therefore runs
this file as a child process (stdlib and ``pygohcl`` only, so it starts fast): a crash
ends the child, never the worker.

Protocol: a JSON list of file contents on stdin; on stdout one JSON object,
``{"ok": true}`` or ``{"index": i, "kind": "syntax"|"depth", "message": "..."}`` for the
first file that does not parse.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    """Parse every content from stdin; report the first failure on stdout."""
    import pygohcl

    contents = json.load(sys.stdin)
    for index, content in enumerate(contents):
        try:
            pygohcl.loads(content)
        except (pygohcl.HCLParseError, pygohcl.HCLInternalError) as e:
            report = {"index": index, "kind": "syntax", "message": str(e)}
        except RecursionError:
            # Go parsed it; Python could not read back a result nested this deep.
            report = {"index": index, "kind": "depth",
                      "message": "nested too deeply to be read back"}
        else:
            continue
        json.dump(report, sys.stdout)
        return 0
    json.dump({"ok": True}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
