"""frontend.platforms.parse_platform: containerd's platforms.Parse."""

import pytest

from frontend.ops import Platform
from frontend.platforms import parse_platform


def test_aliases_and_normalisation():
    assert parse_platform("linux/aarch64") == Platform(os="linux", architecture="arm64", variant="")
    assert parse_platform("linux/arm64/v8") == Platform(os="linux", architecture="arm64", variant="")
    assert parse_platform("LINUX/ARM") == Platform(os="linux", architecture="arm", variant="v7")


@pytest.mark.parametrize("text", ["linux/%%", "linux/../..", "linux/a\nb", "linux/a b", "linux/", "a/b/c/d"])
def test_components_containerd_refuses(text):
    with pytest.raises(ValueError, match="invalid"):
        parse_platform(text)
