"""Benchmarks: pybuild against docker BuildKit and buildah (python3 -m bench)."""
