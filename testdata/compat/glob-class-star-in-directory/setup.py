import os
def make(context):
    os.makedirs(context / "a*b"); (context / "a*b" / "f").write_text("f\n")
    os.makedirs(context / "axxb"); (context / "axxb" / "g").write_text("g\n")
