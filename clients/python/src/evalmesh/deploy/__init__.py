"""Deployment helpers: the local CA and certificates (``certs``), and the one-shot steps of
docker-compose.yml (``python -m evalmesh.deploy setup|bootstrap``)."""

from evalmesh.deploy.certs import TlsFiles, ensure_ca, ensure_server_certificate, local_tls

__all__ = ["TlsFiles", "ensure_ca", "ensure_server_certificate", "local_tls"]
