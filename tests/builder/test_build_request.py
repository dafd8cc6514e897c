"""BuildRequest (builder/build.py): the frozen record the CLI and the Python
API pass to a build."""

from __future__ import annotations

import dataclasses

import pytest

from builder.build import BuildRequest


def test_a_request_is_frozen_all_the_way_down():
    tags, build_args = ["app:1"], {"A": "1"}
    request = BuildRequest("ctx", tags=tags, build_args=build_args)
    tags.append("app:2")
    build_args["B"] = "2"
    assert request.tags == ("app:1",)
    assert dict(request.build_args) == {"A": "1"}
    with pytest.raises(TypeError):
        request.build_args["C"] = "3"
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.tags = ("other",)


def test_a_replaced_field_is_frozen_too():
    request = dataclasses.replace(BuildRequest("ctx"), labels={"k": "v"}, secrets=["id=a,src=f"])
    assert request.secrets == ("id=a,src=f",)
    with pytest.raises(TypeError):
        request.labels["k"] = "w"
