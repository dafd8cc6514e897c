"""Issue #3, end to end: heredocs in RUN and COPY, as the Dockerfile
reference describes them, run with busybox's sh."""

from __future__ import annotations

import pytest

from e2e.helpers import build_image

pytestmark = pytest.mark.e2e


def test_run_heredocs(tmp_path, root, busybox_image):
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ENV GREETING=hello
RUN <<EOF
echo "script line 1: $GREETING" > /h1
echo "script line 2" >> /h1
EOF
RUN <<EOT sh -e
echo "stdin of the command, expanded by its shell: $GREETING" > /h2
EOT
RUN <<-EOT
\techo "tabs stripped" > /h3
\t\tif [ -n "$GREETING" ]; then echo nested >> /h3; fi
\tEOT
RUN <<FILE1 cat > /h4a && <<FILE2 cat > /h4b
I am
first
FILE1
I am
second
FILE2
RUN <<'EOF'
echo '$GREETING' stays literal in a quoted heredoc for cat: > /h5
cat >> /h5 <<'INNER'
$GREETING
INNER
EOF
RUN <<EOF
#!/bin/sh
# a shebang script runs as a program: $0 is its path
echo "shebang: $0 $GREETING" > /h6
EOF
""")
    assert built.read_text("/h1") == "script line 1: hello\nscript line 2\n"
    assert built.read_text("/h2") == "stdin of the command, expanded by its shell: hello\n"
    assert built.read_text("/h3") == "tabs stripped\nnested\n"
    assert built.read_text("/h4a") == "I am\nfirst\n"
    assert built.read_text("/h4b") == "I am\nsecond\n"
    assert built.read_text("/h5") == "$GREETING stays literal in a quoted heredoc for cat:\n$GREETING\n"
    assert built.read_text("/h6") == "shebang: /dev/pipes/EOF hello\n"
    assert not built.exists("/dev/pipes/EOF")  # the script was a mount, not a file of the image


def test_copy_heredocs(tmp_path, root, busybox_image):
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ARG VERSION=1.2
ENV NAME=app
COPY <<EOF /etc/expanded.conf
name=${{NAME}} version=$VERSION
home=\\$HOME
EOF
COPY <<"EOF" /etc/literal.conf
name=${{NAME}} version=$VERSION
EOF
COPY --chmod=0640 --chown=app:app <<robots.txt <<humans.txt /srv/www/
User-agent: *
robots.txt
people
humans.txt
COPY <<-EOF /tabs.txt
\tindented
\tEOF
RUN set -e; \\
    [ "$(stat -c %a:%U:%G /srv/www/robots.txt)" = 640:app:app ]; \\
    [ "$(stat -c %a:%U:%G /srv/www/humans.txt)" = 640:app:app ]
""", build_args={"VERSION": "2.0"})
    assert built.read_text("/etc/expanded.conf") == "name=app version=2.0\nhome=$HOME\n"
    assert built.read_text("/etc/literal.conf") == "name=${NAME} version=$VERSION\n"
    assert built.read_text("/srv/www/robots.txt") == "User-agent: *\n"
    assert built.read_text("/srv/www/humans.txt") == "people\n"
    assert built.read_text("/tabs.txt") == "indented\n"
