"""Kubeconfigs rendered by kaji are read back by the real kubectl with the same content."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kaji import pki
from kaji.kubeconfig import render_kubeconfig

KUBECTL = shutil.which("kubectl")


@pytest.fixture(scope="module")
def material() -> dict[str, str]:
    ca = pki.create_ca("kaji-cluster-ca")
    key = pki.generate_private_key()
    csr = pki.create_csr(key, pki.Identity.of("system:node:w0", ["system:nodes"], ["w0"]))
    return {"ca": ca.cert_pem, "cert": pki.sign_csr(csr, ca, pki.Profile.CLIENT), "key": key}


def test_same_inputs_give_same_bytes(material: dict[str, str]) -> None:
    args = dict(
        server="https://10.0.0.1:6443",
        ca_cert_pem=material["ca"],
        client_cert_pem=material["cert"],
        client_key_pem=material["key"],
        user="system:node:w0",
    )
    assert render_kubeconfig(**args) == render_kubeconfig(**args)
    assert render_kubeconfig(**args) != render_kubeconfig(**{**args, "server": "https://x:1"})


def test_plain_http_server_is_refused(material: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="https"):
        render_kubeconfig(
            server="http://10.0.0.1:8080",
            ca_cert_pem=material["ca"],
            client_cert_pem=material["cert"],
            client_key_pem=material["key"],
            user="admin",
        )


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (./run test installs it)")
def test_kubectl_reads_it_back(material: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(
        render_kubeconfig(
            server="https://10.0.0.1:6443",
            ca_cert_pem=material["ca"],
            client_cert_pem=material["cert"],
            client_key_pem=material["key"],
            user="system:node:w0",
        )
    )
    result = subprocess.run(
        [KUBECTL, "config", "view", "--kubeconfig", str(path), "--minify", "--raw", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    seen = json.loads(result.stdout)
    assert seen["current-context"] == "system:node:w0@kaji"
    cluster = seen["clusters"][0]["cluster"]
    assert cluster["server"] == "https://10.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]).decode() == material["ca"]
    user = seen["users"][0]["user"]
    cert = base64.b64decode(user["client-certificate-data"]).decode()
    pki.verify_chain(cert, material["ca"], pki.Profile.CLIENT)
    assert pki.cert_matches_key(cert, base64.b64decode(user["client-key-data"]).decode())
    assert yaml.safe_load(path.read_text()) == json.loads(path.read_text())
