"""bench.importcost runs end to end (a harness check, not a timing): one
repetition of each case, this tree against itself as the baseline."""

import subprocess
import sys

from fixtures.pybuild import SOURCE, pybuild_env


def test_import_cost_tables_are_made(busybox_image, tmp_path):
    # A console script as pip writes one, whatever is installed.
    script = tmp_path / "pybuild"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom builder.entry import main\nsys.exit(main())\n")
    script.chmod(0o755)
    out = tmp_path / "tables.txt"
    done = subprocess.run([sys.executable, "-m", "bench.importcost", "--pybuild", str(script), "--base",
                           busybox_image.ref, "--reps", "1", "--top", "5", "--baseline", str(SOURCE),
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=SOURCE, env=pybuild_env(tmp_path))
    assert done.returncode == 0, done.stderr
    headers = [line for line in done.stdout.splitlines() if line.startswith("## ")]
    assert len(headers) == 4  # two trees, two cases
    assert sum("this tree" in h for h in headers) == 2 and sum("baseline" in h for h in headers) == 2
    rows = [line.split() for line in done.stdout.splitlines() if line[:14].strip().replace(".", "").isdigit()]
    assert len(rows) == 4 * 5
    assert ["builder.build"] in [row[1:] for row in rows]
    assert out.read_text().strip() == done.stdout.strip()
