"""Shared helpers: the golden form of parse results and a fake resolver."""

from __future__ import annotations

from frontend.definition import ResolvedImage
from frontend.nodes import Dockerfile, Node


def node_summary(node: Node) -> dict:
    summary = {
        "keyword": node.keyword,
        "args": list(node.args),
        "start": node.start,
        "end": node.end,
    }
    if node.flags:
        summary["flags"] = list(node.flags)
    if node.json:
        summary["json"] = True
    if node.legacy_kv:
        summary["legacy_kv"] = True
    if node.heredocs:
        summary["heredocs"] = [[h.name, h.content, h.expand, h.chomp] for h in node.heredocs]
    return summary


def dockerfile_summary(parsed: Dockerfile) -> dict:
    return {
        "directives": {d.name: d.value for d in parsed.directives},
        "escape": parsed.escape,
        "nodes": [node_summary(n) for n in parsed.nodes],
        "empty_continuations": list(parsed.empty_continuations),
    }


DIGEST = "sha256:" + "a" * 64


class FakeResolver:
    """Resolves any reference to a small config; records what was asked.

    `configs` maps a reference to the "config" section of its image config.
    """

    def __init__(self, configs: dict | None = None):
        self.configs = configs or {}
        self.calls: list[tuple[str, object]] = []

    def __call__(self, ref, platform):
        self.calls.append((ref, platform))
        section = self.configs.get(ref, {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["sh"]})
        return ResolvedImage(
            ref="docker.io/library/" + ref.split(":")[0] + ":latest",
            digest=DIGEST,
            config={
                "architecture": platform.architecture,
                "os": platform.os,
                "config": section,
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "b" * 64]},
                "history": [{"created_by": "/bin/sh -c #(nop) ADD file:1 in /"}],
            },
        )
