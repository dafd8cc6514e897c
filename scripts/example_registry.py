"""Start a loopback registry holding a busybox base image, for the example.

Prints the registry's host:port, then waits until stdin closes or it is
killed; the registry and its storage are removed on the way out. It reuses
the test fixtures' code, so the example runs on exactly what the tests do.
"""

import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fixtures import busybox  # noqa: E402
from fixtures.registry import remove_registry, start_registry  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pybuild-example-") as tmp:
        registry = start_registry(Path(tmp) / "registry")
        try:
            layout = Path(tmp) / "layout"
            busybox.build_busybox_layout(layout)
            busybox.skopeo_push(layout, "latest", f"{registry.host}/busybox:latest")
            print(registry.host, flush=True)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            sys.stdin.read()
        finally:
            remove_registry(registry)


if __name__ == "__main__":
    main()
