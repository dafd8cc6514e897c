"""Issue #3, end to end: the instructions that shape the image config
(HEALTHCHECK, SHELL, ENTRYPOINT/CMD, EXPOSE, VOLUME, LABEL, STOPSIGNAL,
USER, WORKDIR, ENV), read back from the exported OCI layout."""

from __future__ import annotations

import pytest

from e2e.helpers import build_image

pytestmark = pytest.mark.e2e

SECOND = 1_000_000_000


def test_metadata_instructions(tmp_path, root, busybox_image):
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
LABEL org.example.base="yes"
EXPOSE 80 8080/udp 9000-9001/tcp
VOLUME ["/data", "/logs"]
VOLUME /cache
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=5s --timeout=3s --start-period=2s --start-interval=1s --retries=4 \\
    CMD wget -q -O- http://localhost/ || exit 1
LABEL "multi word"="a value" single=one \\
      org.example.base=overridden
""")
    config = built.config
    assert config["ExposedPorts"] == {"80/tcp": {}, "8080/udp": {}, "9000/tcp": {}, "9001/tcp": {}}
    assert config["Volumes"] == {"/data": {}, "/logs": {}, "/cache": {}}
    assert config["StopSignal"] == "SIGQUIT"
    assert config["Labels"] == {"org.example.base": "overridden", "multi word": "a value", "single": "one"}
    assert config["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"],
        "Interval": 5 * SECOND, "Timeout": 3 * SECOND, "StartPeriod": 2 * SECOND,
        "StartInterval": 1 * SECOND, "Retries": 4,
    }  # fmt: skip
    # Metadata-only instructions add empty history entries and no layer.
    history = built.image_config["history"]
    assert [h.get("empty_layer", False) for h in history[-7:]] == [True] * 7
    assert len(built.manifest["layers"]) == len(busybox_image.layers)

    # HEALTHCHECK NONE and the exec form, in an image built on that one.
    child = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref} AS base
HEALTHCHECK CMD ["/bin/true"]
FROM base AS exec-form
FROM base
HEALTHCHECK NONE
""", local=False)
    assert child.config["Healthcheck"] == {"Test": ["NONE"]}
    exec_form = build_image(tmp_path, root, f"FROM {busybox_image.ref}\nHEALTHCHECK CMD [\"/bin/true\"]\n",
                            local=False)
    assert exec_form.config["Healthcheck"] == {"Test": ["CMD", "/bin/true"]}


def test_entrypoint_and_cmd(tmp_path, root, busybox_image):
    dockerfile = f"""\
FROM {busybox_image.ref} AS inherited-cmd-reset
# busybox's CMD ["sh"] comes from the base image: ENTRYPOINT resets it.
ENTRYPOINT ["/bin/echo", "entry"]

FROM inherited-cmd-reset AS cmd-added
CMD ["from", "cmd"]

FROM {busybox_image.ref} AS cmd-then-entrypoint
# A CMD of this very stage survives a later ENTRYPOINT.
CMD ["kept"]
ENTRYPOINT ["/bin/echo"]

FROM {busybox_image.ref} AS shell-forms
ENTRYPOINT echo "$HOME" entry
CMD echo cmd

FROM cmd-added AS cleared
ENTRYPOINT []
CMD []
"""
    def config(target):
        return build_image(tmp_path, root, dockerfile, target=target, local=False).config

    reset = config("inherited-cmd-reset")
    assert reset["Entrypoint"] == ["/bin/echo", "entry"]
    assert not reset.get("Cmd")
    added = config("cmd-added")
    assert (added["Entrypoint"], added["Cmd"]) == (["/bin/echo", "entry"], ["from", "cmd"])
    kept = config("cmd-then-entrypoint")
    assert (kept["Entrypoint"], kept["Cmd"]) == (["/bin/echo"], ["kept"])
    shell = config("shell-forms")
    assert shell["Entrypoint"] == ["/bin/sh", "-c", 'echo "$HOME" entry']
    assert shell["Cmd"] == ["/bin/sh", "-c", "echo cmd"]
    cleared = config("cleared")
    assert not cleared.get("Entrypoint") and not cleared.get("Cmd")


def test_shell_instruction(tmp_path, root, busybox_image):
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
COPY --chmod=755 <<'EOF' /usr/local/bin/logsh
#!/bin/sh
printf '%s|' "$@" >> /shell.log
echo >> /shell.log
exec /bin/sh "$@"
EOF
SHELL ["/usr/local/bin/logsh", "-e", "-c"]
RUN echo one > /one
RUN ["/bin/sh", "-c", "echo exec form does not use SHELL > /two"]
CMD echo the cmd
ENTRYPOINT echo the entrypoint
""")
    assert built.config["Shell"] == ["/usr/local/bin/logsh", "-e", "-c"]
    assert built.read_text("/shell.log") == "-e|-c|echo one > /one|\n"
    assert built.read_text("/one") == "one\n"
    assert built.config["Entrypoint"] == ["/usr/local/bin/logsh", "-e", "-c", "echo the entrypoint"]
    # CMD uses SHELL too, and survives the ENTRYPOINT that follows it in the same stage.
    assert built.config["Cmd"] == ["/usr/local/bin/logsh", "-e", "-c", "echo the cmd"]


def test_user_workdir_env(tmp_path, root, busybox_image):
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
# Within one ENV, $A is the value from before the instruction (unset here).
ENV A=1 B="two words" C=$A-x
ENV LEGACY value with spaces
ENV P=old
ENV P=new Q=$P
ENV ESCAPED=\\$A
WORKDIR /srv
WORKDIR app
USER app
WORKDIR data/../owned
RUN set -e; [ "$PWD" = /srv/app/owned ]; \\
    [ "$(stat -c %U:%G /srv/app/owned)" = app:app ]; \\
    [ "$(stat -c %U /srv/app)" = root ]; \\
    [ "$(id -u)" = 1000 ]; \\
    echo "$A|$B|$C|$LEGACY|$P|$Q|$ESCAPED" > env.txt
USER root:app
RUN [ "$(id -u):$(id -g)" = 0:1000 ]
USER 1000
""")
    config = built.config
    assert config["WorkingDir"] == "/srv/app/owned"
    assert config["User"] == "1000"
    env = built.env
    assert (env["A"], env["B"], env["C"], env["LEGACY"]) == ("1", "two words", "-x", "value with spaces")
    assert (env["P"], env["Q"], env["ESCAPED"]) == ("new", "old", "$A")
    assert built.read_text("/srv/app/owned/env.txt") == "1|two words|-x|value with spaces|new|old|$A\n"
    assert built.path("/srv/app/owned").stat().st_uid == 1000
