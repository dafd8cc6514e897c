"""Exporters: an `Image` is assembled from snapshots (assemble, layers,
compression, squash) and written where `-o` asks (outputs: oci, docker,
rootfs for local/tar); pushing is `builder.registry`'s."""
