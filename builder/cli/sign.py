"""sign and verify: cosign-compatible signatures of images in a registry
(builder/signing)."""

COMMANDS = ()
