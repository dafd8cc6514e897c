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
    sections = {}  # header -> its rows' module names, largest first
    for line in done.stdout.splitlines():
        if line.startswith("## "):
            header = sections.setdefault(line, [])
        elif line[:14].strip().replace(".", "").isdigit():
            header.append(line.split()[1])
    assert len(sections) == 6  # two trees, three cases
    assert sum(h.startswith("## this tree") for h in sections) == 3
    assert all(len(rows) == 5 for rows in sections.values())
    for header, rows in sections.items():
        if "memo" in header:
            assert "builder.build" not in rows  # answered by the memo: no build module loaded
        else:
            assert rows[0] == "builder.build"  # a full cached build: the build is its largest import
    assert out.read_text().strip() == done.stdout.strip()
