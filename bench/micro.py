"""Runtime micro-benchmarks of issue 4, against the command itself:

1. the overhead of a trivial RUN (`true`) per executor, over running
   /bin/true directly;
2. turning an upperdir of N files into an uncompressed layer with
   runtime.layer.write_layer, against GNU `tar -c` of the same directory
   (both written through a pipe to `cat > /dev/null`, since GNU tar skips
   reading file data when it writes to /dev/null itself).

    python3 -m bench.micro [--files 10000] [--megabytes 1024] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.builtin import BuiltinExecutor
from runtime.layer import write_layer
from runtime.oci import OciExecutor
from runtime.spec import ExecSpec

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def _rootfs(path: Path) -> Path:
    (path / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    for applet in ("sh", "true"):
        (path / "bin" / applet).symlink_to("busybox")
    (path / "etc").mkdir()
    (path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (path / "etc" / "group").write_text("root:x:0:\n")
    return path


def _median_seconds(action, reps: int) -> float:
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run_overhead(reps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="pybuild-micro-") as tmp:
        rootfs = _rootfs(Path(tmp) / "rootfs")
        spec = ExecSpec(args=("/bin/true",))
        direct = _median_seconds(lambda: subprocess.run([BUSYBOX, "true"], check=True), reps)
        result = {"direct": direct}
        executors = {"builtin": BuiltinExecutor()}
        if shutil.which("runc"):
            executors["oci (runc)"] = OciExecutor("runc")
        for name, executor in executors.items():
            executor.run(spec, rootfs, lambda data: None)  # warm the page cache
            result[name] = _median_seconds(lambda: executor.run(spec, rootfs, lambda data: None), reps)
        return result


def _fill(directory: Path, files: int, megabytes: int) -> None:
    size = max(1, megabytes * 1024 * 1024 // files)
    block = os.urandom(size)
    for n in range(files):
        sub = directory / f"d{n % 100:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{n:05d}").write_bytes(block)


def layer_speed(files: int, megabytes: int, reps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="pybuild-micro-", dir="/var/tmp") as tmp:
        upper = Path(tmp) / "upper"
        upper.mkdir()
        _fill(upper, files, megabytes)

        def tar():
            subprocess.run(f"tar -C {upper} -cf - . | cat > /dev/null", shell=True, check=True)

        def ours():
            sink = subprocess.Popen(["sh", "-c", "cat > /dev/null"], stdin=subprocess.PIPE)
            write_layer(upper, sink.stdin)
            sink.stdin.close()
            sink.wait()

        tar()  # warm the page cache for both
        return {"tar -c": _median_seconds(tar, reps), "write_layer": _median_seconds(ours, reps)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.micro", description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    overhead = run_overhead(args.reps * 4)
    print("| trivial RUN | median | overhead over the command |")
    print("| --- | --- | --- |")
    for name, seconds in overhead.items():
        extra = "" if name == "direct" else f"{(seconds - overhead['direct']) * 1000:.1f} ms"
        print(f"| {name} | {seconds * 1000:.1f} ms | {extra} |")
    speed = layer_speed(args.files, args.megabytes, args.reps)
    print()
    print(f"| {args.files} files, {args.megabytes} MB → uncompressed tar | median | ratio to tar |")
    print("| --- | --- | --- |")
    for name, seconds in speed.items():
        print(f"| {name} | {seconds:.2f} s | {seconds / speed['tar -c']:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
