"""Issue 5: the --cache-to/--cache-from syntax and the cache config format."""

from __future__ import annotations

import pytest

from builder.remotecache.config import CacheConfig, CacheConfigError, CacheLayer
from builder.remotecache.spec import CacheMode, CacheSpecError, CacheType, parse_cache_spec
from builder.root.gc import GCError, parse_duration, parse_size
from builder.image import OCI_LAYER_GZIP, Descriptor
from cache.digest import Digest


def test_cache_specs():
    spec = parse_cache_spec("type=registry,ref=127.0.0.1:5000/app:cache,mode=max,cache-mounts=true", export=True)
    assert (spec.type, spec.ref, spec.mode, spec.cache_mounts) == (
        CacheType.REGISTRY, "127.0.0.1:5000/app:cache", CacheMode.MAX, True)
    bare = parse_cache_spec("127.0.0.1:5000/app:1", export=False)
    assert bare.type is CacheType.REGISTRY and bare.ref == "127.0.0.1:5000/app:1"
    local = parse_cache_spec("type=local,src=/tmp/c", export=False)
    assert local.type is CacheType.LOCAL and local.path == "/tmp/c" and local.tag == "latest"
    for bad, export, message in [("type=local,dest=/x", False, "needs src=DIR"),
                                 ("type=inline", False, "--cache-from IMAGE"),
                                 ("type=registry,ref=a/b,cache-mounts=maybe", True, "cache-mounts"),
                                 ("ref", True, "expected type="),
                                 ("type=registry,ref", True, "not key=value")]:
        with pytest.raises(CacheSpecError, match=message):
            parse_cache_spec(bad, export=export)


def _layer(n: int) -> CacheLayer:
    digest = Digest.of_bytes(b"blob%d" % n)
    return CacheLayer(Descriptor(OCI_LAYER_GZIP, digest, 10 + n), Digest.of_bytes(b"tar%d" % n))


def test_config_round_trip_shares_layers():
    config = CacheConfig()
    config.add_record("sha256:" + "a" * 64, [_layer(0), _layer(1)], 100.0)
    config.add_record("sha256:" + "b" * 64, [_layer(0)], 99.0)
    config.mounts["abc"] = config.add_layer(_layer(2))
    again = CacheConfig.from_json(config.to_json(), "test")
    assert len(again.layers) == 3
    assert again.chain_of("sha256:" + "a" * 64) == [_layer(0), _layer(1)]
    assert again.records["sha256:" + "b" * 64].created == 99.0
    assert again.mounts == {"abc": 2}


@pytest.mark.parametrize("body", [
    {"version": 2},
    {"version": 1, "layers": [{"digest": "nope"}]},
    {"version": 1, "layers": [], "records": [{"key": "k", "chain": [0], "created": 1}]},
    {"version": 1, "layers": [], "cacheMounts": [{"name": "../x", "layer": 0}]},
])
def test_malformed_configs_are_one_clear_error(body):
    with pytest.raises(CacheConfigError, match="cache test"):
        CacheConfig.from_json(body, "test")


def test_sizes_and_durations():
    assert parse_size("10GB") == 10 << 30 and parse_size("512") == 512 and parse_size("1.5kb") == 1536
    assert parse_duration("1h30m") == 5400 and parse_duration("7d") == 7 * 86400
    for bad in ("", "ten", "5 parsecs"):
        with pytest.raises(GCError):
            parse_size(bad)
    for bad in ("", "10", "1y"):
        with pytest.raises(GCError):
            parse_duration(bad)
