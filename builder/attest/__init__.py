"""Attestations beside an image: SLSA provenance and an SPDX SBOM, stored
as BuildKit stores them (attestation manifests in the image index).

    options.py     --provenance, --sbom, --attest, as buildx reads them
    record.py      what a build used (bases, sources, args), for provenance
    provenance.py  SLSA v0.2 and v1 predicates, min and max
    pkgdb.py, sbom_scan.py, layerfacts.py
                   package databases read per layer, cached by diff_id
    sbom.py        the SPDX 2.3 document of the merged layers
    intoto.py      the in-toto statement both are carried in
    purl.py        package URLs (images, deb, apk, pypi, npm)
    vcs.py         a local checkout's git source and commit
    manifests.py   attestation manifests and their index entries
"""
