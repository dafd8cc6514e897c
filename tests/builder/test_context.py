"""The build context: selection (wildcards, ignore files, confinement) and
content checksums (stable, content-sensitive, served by the stat cache)."""

from __future__ import annotations

import os

import pytest



from builder.context.trees import BuildContext, Selection  # noqa: E402
from cache.statcache import StatCache  # noqa: E402
from frontend.errors import ContextError  # noqa: E402


def make_tree(root, spec: dict) -> None:
    """{"a.txt": b"..", "dir/": None, "link": ("->", "target")}"""
    for name, value in spec.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        elif isinstance(value, tuple):
            os.symlink(value[1], path)
        else:
            path.write_bytes(value)


@pytest.fixture
def ctx_dir(tmp_path):
    root = tmp_path / "ctx"
    root.mkdir()
    make_tree(root, {
        "a.txt": b"a",
        "b.txt": b"b",
        "c.md": b"c",
        "src/main.py": b"print()",
        "src/util/helpers.py": b"x = 1",
        "src/util/data.bin": b"\0\1",
        "docs/guide.md": b"guide",
        "secret/key": b"k",
        "secret/public.pem": b"p",
        "node_modules/pkg/index.js": b"js",
        "inner_link": ("->", "src/main.py"),
        "dir_link": ("->", "src"),
        "out_link": ("->", "../../etc"),
        "abs_link": ("->", "/etc/passwd"),
    })
    return root


def names(selection: Selection) -> list[str]:
    return [e.relpath for e in selection.entries]


def match_names(selection: Selection) -> list[str]:
    return [m.name for m in selection.matches]


# selection ------------------------------------------------------------------

@pytest.mark.parametrize("patterns, expected", [
    (["a.txt"], ["a.txt"]),
    (["/a.txt"], ["a.txt"]),
    (["./a.txt"], ["a.txt"]),
    (["*.txt"], ["a.txt", "b.txt"]),
    (["?.md"], ["c.md"]),
    (["[ab].txt"], ["a.txt", "b.txt"]),
    (["[^a].txt"], ["b.txt"]),
    (["src/*/*.py"], ["src/util/helpers.py"]),
    (["*/main.py"], ["src/main.py"]),
    (["src"], ["src", "src/main.py", "src/util", "src/util/data.bin", "src/util/helpers.py"]),
    (["src/util/"], ["src/util", "src/util/data.bin", "src/util/helpers.py"]),
])
def test_select_patterns(ctx_dir, patterns, expected):
    sel = BuildContext(ctx_dir).select(patterns)
    assert names(sel) == expected


def test_star_never_crosses_a_slash(ctx_dir):
    assert match_names(BuildContext(ctx_dir).select(["*.py"])) == []


def test_whole_context(ctx_dir):
    sel = BuildContext(ctx_dir, ("node_modules", "secret")).select(["."])
    assert sel.matches[0].root.relpath == ""
    assert "a.txt" in names(sel) and not any(n.startswith(("secret", "node_modules")) for n in names(sel))


def test_dotdot_is_confined_to_the_context(ctx_dir):
    ctx = BuildContext(ctx_dir)
    assert names(ctx.select(["../a.txt"])) == ["a.txt"]
    assert names(ctx.select(["../../../../src/main.py"])) == ["src/main.py"]
    with pytest.raises(ContextError):
        ctx.select(["../ctx/a.txt"])  # the context's own name means nothing inside it


def test_missing_path_is_a_clear_error(ctx_dir):
    with pytest.raises(ContextError, match='"/missing": not found'):
        BuildContext(ctx_dir).select(["missing"])


def test_empty_wildcard_is_not_an_error_but_its_directory_must_exist(ctx_dir):
    ctx = BuildContext(ctx_dir)
    assert ctx.select(["*.nothing"]).matches == ()
    with pytest.raises(ContextError, match="lstat /nodir: no such file or directory"):
        ctx.select(["nodir/*.txt"])


def test_bad_pattern(ctx_dir):
    with pytest.raises(ContextError, match="invalid pattern"):
        BuildContext(ctx_dir).select(["[a-"])


def test_top_level_symlink_is_followed_inside_the_context(ctx_dir):
    ctx = BuildContext(ctx_dir)
    sel = ctx.select(["inner_link"])
    (match,) = sel.matches
    assert match.name == "inner_link" and match.root.relpath == "src/main.py"
    sel = ctx.select(["dir_link"])
    assert sel.matches[0].is_dir and "src/util/helpers.py" in names(sel)


def test_symlinks_pointing_out_resolve_inside_the_context(ctx_dir):
    ctx = BuildContext(ctx_dir)
    # ../../etc from the context root is the context's own /etc: missing
    with pytest.raises(ContextError, match="not found"):
        ctx.select(["out_link"])
    with pytest.raises(ContextError, match="not found"):
        ctx.select(["abs_link"])  # the context's /etc/passwd, not the host's
    (ctx_dir / "etc").mkdir()
    (ctx_dir / "etc" / "passwd").write_bytes(b"ctx passwd")
    sel = ctx.select(["abs_link"])
    assert sel.matches[0].root.path == str(ctx_dir / "etc" / "passwd")


def test_symlinks_inside_a_directory_are_entries_not_followed(ctx_dir):
    os.symlink("/etc", ctx_dir / "src" / "escape")
    sel = BuildContext(ctx_dir).select(["src"])
    entry = next(e for e in sel.entries if e.relpath == "src/escape")
    assert os.path.islink(entry.path)
    assert not any(n.startswith("src/escape/") for n in names(sel))


def test_follow_symlinks_off_selects_the_link_itself(ctx_dir):
    sel = BuildContext(ctx_dir).select(["inner_link"], follow_symlinks=False)
    assert names(sel) == ["inner_link"]


def test_dockerignore_makes_files_invisible(ctx_dir):
    ctx = BuildContext(ctx_dir, ("*.md", "secret", "node_modules"))
    sel = ctx.select(["*"])
    # top-level symlinks are followed: abs_link and out_link lead to the
    # context's own (missing) /etc and drop out; `*.md` is top-level only
    assert match_names(sel) == ["a.txt", "b.txt", "dir_link", "docs", "inner_link", "src"]
    assert names(sel) == [
        "a.txt", "b.txt", "docs", "docs/guide.md",
        "src", "src/main.py", "src/util", "src/util/data.bin", "src/util/helpers.py",
    ]
    with pytest.raises(ContextError, match="not found"):
        ctx.select(["c.md"])
    with pytest.raises(ContextError, match="lstat /secret: no such file or directory"):
        ctx.select(["secret/key"])
    assert names(BuildContext(ctx_dir, ("**/*.md",)).select(["docs"])) == ["docs"]  # emptied, still there


def test_dockerignore_exception_reincludes_inside_an_excluded_directory(ctx_dir):
    ctx = BuildContext(ctx_dir, ("secret", "!secret/public.pem"))
    assert names(ctx.select(["secret"])) == ["secret", "secret/public.pem"]
    assert names(ctx.select(["secret/public.pem"])) == ["secret/public.pem"]
    with pytest.raises(ContextError):
        ctx.select(["secret/key"])


def test_copy_exclude_is_relative_to_each_source(ctx_dir):
    ctx = BuildContext(ctx_dir)
    # patterns are anchored at the copied source, `*` stays in one component
    assert names(ctx.select(["src"], excludes=["*.py"])) == [
        "src", "src/util", "src/util/data.bin", "src/util/helpers.py"]
    assert names(ctx.select(["src"], excludes=["**/*.py"])) == ["src", "src/util", "src/util/data.bin"]
    assert names(ctx.select(["src"], excludes=["util"])) == ["src", "src/main.py"]
    # a wildcard hit is matched by its own name too (the documented `hom*` example)
    assert match_names(ctx.select(["*.txt", "c.md"], excludes=["a*"])) == ["b.txt", "c.md"]


def test_parents_pivot(ctx_dir):
    sel = BuildContext(ctx_dir).select(["src/./util/helpers.py", "docs/guide.md"])
    assert [m.parents_path for m in sel.matches] == ["util/helpers.py", "docs/guide.md"]


def test_entries_are_sorted_and_unique(ctx_dir):
    sel = BuildContext(ctx_dir).select(["src", "src/main.py", "*.txt"])
    assert names(sel) == sorted(set(names(sel)))
    assert len(sel.matches) == 4


# checksum ---------------------------------------------------------------------

def test_checksum_ignores_times_and_host_owner(ctx_dir):
    ctx = BuildContext(ctx_dir)
    before = ctx.checksum(ctx.select(["src", "a.txt"]))
    os.utime(ctx_dir / "src" / "main.py", (1, 1))
    os.utime(ctx_dir / "src", (2, 2))
    os.chown(ctx_dir / "a.txt", 1234, 5678)
    assert ctx.checksum(ctx.select(["src", "a.txt"])) == before


def test_checksum_changes_with_content_mode_and_names(ctx_dir):
    ctx = BuildContext(ctx_dir)
    base = ctx.checksum(ctx.select(["src"]))
    (ctx_dir / "src" / "main.py").write_bytes(b"print(1)")
    changed = ctx.checksum(ctx.select(["src"]))
    assert changed != base
    os.chmod(ctx_dir / "src" / "main.py", 0o755)
    chmodded = ctx.checksum(ctx.select(["src"]))
    assert chmodded != changed
    os.rename(ctx_dir / "src" / "main.py", ctx_dir / "src" / "app.py")
    assert ctx.checksum(ctx.select(["src"])) != chmodded


def test_checksum_ignores_unselected_and_ignored_files(ctx_dir):
    ctx = BuildContext(ctx_dir, ("src/util/data.bin",))
    before = ctx.checksum(ctx.select(["src"]))
    (ctx_dir / "b.txt").write_bytes(b"changed")
    (ctx_dir / "src" / "util" / "data.bin").write_bytes(b"ignored change")
    assert ctx.checksum(ctx.select(["src"])) == before


def test_checksum_is_portable_across_directories(tmp_path):
    trees = []
    for name in ("one", "two"):
        root = tmp_path / name
        root.mkdir()
        make_tree(root, {"app/x.py": b"x", "app/lib/": None, "app/link": ("->", "x.py")})
        trees.append(BuildContext(root))
    sums = [c.checksum(c.select(["app"])) for c in trees]
    assert sums[0] == sums[1]


def test_stage_trees_hash_ownership(tmp_path):
    root = tmp_path / "rootfs"
    make_tree(root, {"usr/bin/tool": b"bin"})
    tree = BuildContext.of_tree(root)
    before = tree.checksum(tree.select(["/usr"]))
    os.chown(root / "usr" / "bin" / "tool", 1000, 1000)
    assert tree.checksum(tree.select(["/usr"])) != before


def test_stat_cache_spares_rereading_unchanged_files(ctx_dir, tmp_path):
    cache = StatCache(tmp_path / "index.db", racy_window_ns=0)
    ctx = BuildContext(ctx_dir, (), cache)
    first = ctx.checksum(ctx.select(["src", "*.txt"]))
    assert cache.hashed == 5 and cache.hits == 0
    os.utime(ctx_dir / "a.txt", (5, 5))  # touched: re-read once, same digest
    second = ctx.checksum(ctx.select(["src", "*.txt"]))
    assert second == first
    assert cache.hashed == 6 and cache.hits == 4
    # a new process, a new cache object: still no reads
    cache.close()
    cache2 = StatCache(tmp_path / "index.db", racy_window_ns=0)
    ctx2 = BuildContext(ctx_dir, (), cache2)
    assert ctx2.checksum(ctx2.select(["src", "*.txt"])) == first
    assert cache2.hashed == 0 and cache2.hits == 5
    cache2.close()


def test_a_build_walks_each_selection_once(ctx_dir):
    """A build's context (remember=True) answers a repeated select from the
    first walk, as BuildKit reads a context it transferred once."""
    ctx = BuildContext(ctx_dir, remember=True)
    first = ctx.select(["src"])
    (ctx_dir / "src" / "late.txt").write_text("added during the build")
    assert ctx.select(["src"]) is first
    assert "src/late.txt" not in {e.relpath for e in first.entries}
    assert "src/late.txt" in {e.relpath for e in BuildContext(ctx_dir).select(["src"]).entries}


def test_a_missing_directory_on_the_way_is_named_as_buildkit_names_it(ctx_dir):
    # docker 26: `COPY missing/*.txt` and `COPY --from=img /nowhere/x` fail
    # with the lstat of the first directory that is not there, while a
    # missing last component is `"/path": not found`.
    for source in ("nowhere/x", "nowhere/*.txt", "../../nowhere/deeper/x"):
        with pytest.raises(ContextError, match="lstat /nowhere: no such file or directory"):
            BuildContext(ctx_dir).select([source])
    with pytest.raises(ContextError, match='"/sub/none": not found'):
        (ctx_dir / "sub").mkdir(exist_ok=True)
        BuildContext(ctx_dir).select(["sub/none"])


def test_an_ignored_directory_on_the_way_is_missing(ctx_dir):
    (ctx_dir / "gone").mkdir()
    (ctx_dir / "gone" / "f").write_text("f")
    with pytest.raises(ContextError, match="lstat /gone: no such file or directory"):
        BuildContext(ctx_dir, ["gone"]).select(["gone/f"])
