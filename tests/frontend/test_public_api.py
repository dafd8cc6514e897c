import frontend


def test_public_surface():
    assert set(frontend.__all__) == {
        "ContextError", "Definition", "Dockerfile", "DockerfileError", "FrontendError", "HistoryEntry",
        "ImageResolver", "Lexer", "Location", "Matcher", "Node", "Platform", "ResolvedImage", "StageImage",
        "VertexMeta", "Warning", "convert", "parse", "parse_dockerignore",
    }  # fmt: skip
    for name in frontend.__all__:
        assert getattr(frontend, name) is not None


def test_frontend_imports_no_other_package():
    import re
    import sys

    forbidden = re.compile(r"^\s*(from|import)\s+(builder|cache|runtime)\b", re.MULTILINE)
    for module in list(sys.modules):
        if module.startswith("frontend."):
            source = open(sys.modules[module].__file__).read()
            assert not forbidden.search(source), module
