"""The differential harness of issue 19: testdata/compat/ cases built with
pybuild and with docker 26 (BuildKit 0.13), compared as records
(tests/compat/README.md)."""
