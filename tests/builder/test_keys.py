"""Step cache keys (builder/solver/keys.py)."""

from builder.solver.keys import cache_key
from frontend.ops import Scratch


def test_cache_key_ignores_proxy_env_and_input_ids():
    op = {"type": "t", "inputs": ["sha256:aaa"], "env": ["A=1", "HTTP_PROXY=x"]}
    other = {"type": "t", "inputs": ["sha256:bbb"], "env": ["A=1", "http_proxy=y"]}
    assert cache_key(op, ["k1"]) == cache_key(other, ["k1"])
    assert cache_key(op, ["k1"]) != cache_key(op, ["k2"])
    assert cache_key(op, ["k1"], "c1") != cache_key(op, ["k1"], "c2")


def test_a_key_exists_for_text_that_is_no_valid_unicode():
    """A build arg or file name with an undecodable byte reaches the key as
    a lone surrogate; UTF-8 output (the old ensure_ascii=False) cannot
    encode it."""
    op = {"type": "t", "env": ["A=caf\udce9"]}
    assert cache_key(op, []) != cache_key({"type": "t", "env": ["A=caf\u00e9"]}, [])


def test_vertex_ids_take_the_same_form():
    assert Scratch().vertex_id.startswith("sha256:")
    assert Scratch(inputs=("x\udcff",)).vertex_id != Scratch(inputs=("x\u00ff",)).vertex_id
