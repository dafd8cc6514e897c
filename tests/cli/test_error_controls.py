"""An error message that quotes hostile input (a .dockerignore pattern, a
Dockerfile line) reaches the terminal without its control characters: a
context cannot set the terminal's title or move its cursor through it."""

from cli_helpers import write_context


def test_control_characters_of_a_context_are_escaped(tmp_path, cli):
    ctx = write_context(tmp_path / "ctx", "FROM scratch\nCOPY a /a\n", {"a": "a\n"})
    (ctx / ".dockerignore").write_bytes(b"\x1b]0;pwned\x07[abc\n")
    done = cli.build("build", str(ctx))
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "\x1b" not in err and "\x07" not in err
    assert "\\x1b]0;pwned\\x07[abc" in err


def test_a_dockerfile_line_shown_around_an_error_is_escaped(tmp_path, cli):
    ctx = write_context(tmp_path / "ctx", "FROM scratch\nBOGUS \x1b[2J\n")
    done = cli.build("build", str(ctx))
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "\x1b" not in err
    assert "\\x1b[2J" in err
