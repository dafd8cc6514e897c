"""Names with glob characters, for patterns whose [...] hold ? or *."""


def make(context):
    for name in ("a?b", "[x]", "q*", "q]", "x"):
        (context / name).write_text(name + "\n")
