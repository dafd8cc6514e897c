"""The `pybuild` command: the only package that prints, exits, or catches
errors broadly (everything else raises a builder.errors.PybuildError).

    group.py        the `pybuild` group (`pybuild -t app .` is `pybuild build ...`)
    guard.py        errors as one line and an exit status; signals as a clean-up
    shared.py       the options, settings and parsers every command shares
    build.py        build: the flags become one builder.build.BuildRequest
    check.py        check (and build --check)
    store.py        images, inspect, history, tag, rmi, push, pull
    maintenance.py  du, prune, doctor
    login.py        login, logout
    about.py        version, info, completion
    sign.py         sign, verify
"""

from builder.cli.group import main

__all__ = ["main"]
