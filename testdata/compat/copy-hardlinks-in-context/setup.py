import os


def make(context):
    (context / "h1").write_text("h\n")
    os.link(context / "h1", context / "h2")
    os.link(context / "h1", context / "dir" / "h3")
