import os


def make(context):
    (context / "with space.txt").write_text("s\n")
    (context / "ünïcödé-名前.txt").write_text("u\n")
    (context / ("L" * 255)).write_text("long\n")
    deep = context.joinpath(*(["d" * 100] * 20))
    deep.mkdir(parents=True)
    (deep / "f").write_text("deep\n")
    (context / "new\nline").write_text("nl\n")
