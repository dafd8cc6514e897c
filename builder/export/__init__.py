"""Exporters: turn an `Image` whose blobs are in the content store into an
output on disk (OCI layout, docker archive). Pushing lives in
`builder.registry`."""

from builder.export.docker import stream_docker_archive, write_docker_archive
from builder.export.oci import IMAGE_NAME_ANNOTATION, stream_oci_archive, write_oci_layout

__all__ = [
    "IMAGE_NAME_ANNOTATION",
    "stream_docker_archive",
    "stream_oci_archive",
    "write_docker_archive",
    "write_oci_layout",
]
