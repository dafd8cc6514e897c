"""docs/kubernetes-job.yaml, played with `podman kube play` against the test
registry (issue 16): pybuild's own image runs as uid 1000 in a pod, builds
the ConfigMap's context into an emptyDir root and pushes; the pushed image
runs. Then `podman kube down`, and nothing of the pod is left.

podman 4.3 (Debian 12) plays Pods, Deployments and ConfigMaps, not Jobs, so
the Job's pod template (everything podman can check: image, arguments,
security context, annotations, volumes) is played as a Pod of the Job's
name. It also does not apply `procMount: Unmasked`, which a RUN step under the
default isolation needs: so the manifest's Dockerfile has none, and a
second test plays it with a RUN step and `--isolation=chroot` (what
docs/ci.md gives for clusters that refuse Unmasked)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from fixtures.pybuild import SOURCE

pytestmark = pytest.mark.e2e

MANIFEST = SOURCE / "docs" / "kubernetes-job.yaml"
PLACEHOLDER = "registry.example.com"


def job_as_pod(text: str) -> str:
    """The YAML with its Job documents replaced by their pod templates as
    Pods named after the Job (the template is the indented block under
    `  template:`, written two levels deeper than a Pod's own fields)."""
    documents = []
    for document in re.split(r"^---\n", text, flags=re.M):
        if not re.search(r"^kind: Job$", document, flags=re.M):
            documents.append(document)
            continue
        name = re.search(r"^metadata:\n  name: (\S+)$", document, flags=re.M).group(1)
        lines = document.splitlines()
        template = []
        for line in lines[lines.index("  template:") + 1:]:
            if line.strip() and not line.startswith("    "):
                break
            template.append(line[4:])
        pod = ["apiVersion: v1", "kind: Pod"]
        for line in template:
            pod.append(line)
            if line == "metadata:":
                pod.append(f"  name: {name}")
        documents.append("\n".join(pod) + "\n")
    return "---\n".join(documents)


def test_job_as_pod_keeps_the_template_and_names_the_pod_after_the_job():
    pod = job_as_pod(MANIFEST.read_text())
    assert "kind: Job" not in pod and "backoffLimit" not in pod
    assert re.search(r"^kind: Pod\nmetadata:\n  name: pybuild-hello\n  annotations:\n", pod, flags=re.M)
    assert re.search(r"^spec:\n  restartPolicy: Never\n  securityContext:\n    runAsUser: 1000$", pod, flags=re.M)
    assert "kind: ConfigMap" in pod


def test_kubernetes_job_manifest_builds_and_pushes_under_podman_kube_play(pybuild_image, busybox_image, registry,
                                                                          podman_clean, tmp_path):
    _play_and_check(podman_clean, MANIFEST.read_text(), pybuild_image, registry, tmp_path)


def test_with_the_default_proc_masks_a_run_step_needs_isolation_chroot(pybuild_image, busybox_image, registry,
                                                                       podman_clean, tmp_path):
    """What docs/ci.md says for a cluster that refuses procMount: Unmasked
    (podman plays none): the same Job with a RUN step, and --isolation
    chroot, which binds the container's masked /proc."""
    text = MANIFEST.read_text()
    copy = "    COPY message.txt /message.txt\n"
    assert copy in text and 'args: ["--progress=plain", ' in text
    text = text.replace(copy, copy + "    RUN test -r /message.txt && echo ran > /ran\n")
    text = text.replace('args: ["--progress=plain", ', 'args: ["--progress=plain", "--isolation=chroot", ')
    logs = _play_and_check(podman_clean, text, pybuild_image, registry, tmp_path)
    assert "RUN test -r /message.txt" in logs


def _play_and_check(podman, text: str, pybuild_image, registry, tmp_path) -> str:
    assert f"{PLACEHOLDER}/pybuild:latest" in text and f"{PLACEHOLDER}/busybox:latest" in text
    text = text.replace(f"{PLACEHOLDER}/pybuild:latest", pybuild_image.ref).replace(PLACEHOLDER, registry.host)
    played = tmp_path / "job-as-pod.yaml"
    played.write_text(job_as_pod(text))

    podman("kube", "play", "--tls-verify=false", "--network", "host", str(played))
    try:
        exit_code = podman("wait", "pybuild-hello-pybuild", timeout=300).stdout.strip()
        logs = podman("logs", "pybuild-hello-pybuild").stdout + podman("logs", "pybuild-hello-pybuild").stderr
        user = podman("inspect", "--format", "{{.Config.User}}", "pybuild-hello-pybuild").stdout.strip()
    finally:
        podman("kube", "down", str(played))
        # podman 4.3's `kube down` keeps the pod's volumes (the ConfigMap's,
        # the emptyDir): they go as the pod would take them in Kubernetes.
        volumes = podman.listed("volumes")
        if volumes:
            podman("volume", "rm", "--force", *volumes)
    assert exit_code == "0", logs
    assert user == "1000:1000"
    pushed = f"{registry.host}/hello:latest"
    assert f"pushed {pushed}@sha256:" in logs

    config = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--config", f"docker://{pushed}"],
                                       check=True, capture_output=True, timeout=60).stdout)["config"]
    assert config["Cmd"] == ["cat", "/message.txt"]
    ran = podman("run", "--rm", "--tls-verify=false", "--network", "none", pushed)
    assert ran.stdout == "built by pybuild in a Kubernetes Job\n"
    return logs
