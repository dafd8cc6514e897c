"""Attestations beside an image: SLSA provenance and an SPDX SBOM, stored
as BuildKit stores them (attestation manifests in the image index)."""
