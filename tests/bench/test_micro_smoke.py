"""bench.micro runs end to end on tiny sizes (a harness check, not a timing)."""

import subprocess
import sys


def test_micro_benchmarks_run():
    done = subprocess.run([sys.executable, "-m", "bench.micro", "--files", "50", "--megabytes", "1", "--reps", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| builtin |" in done.stdout
    assert "| write_layer |" in done.stdout
