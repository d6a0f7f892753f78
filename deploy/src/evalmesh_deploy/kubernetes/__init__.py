"""Kubernetes manifests rendered from the catalog: ``python -m evalmesh_deploy.kubernetes``
writes the kustomize base (deploy/kubernetes/base); the overlays beside it (``local``,
``production``) are small hand-written patches.

``scripts/gen`` writes the base and a test fails when the committed files differ, so the
images, container ports, gRPC health probes and the environment through which each service
finds the others are the catalog's (``evalmesh_deploy.catalog``), as they are for the local
launcher and docker-compose.yml. What only a cluster needs (replicas, resources, security
contexts, disruption budgets, NetworkPolicies, the NATS StatefulSet, the executors'
autoscaler) is written in the modules of this package. deploy/kubernetes/README.md explains
every part.
"""

from __future__ import annotations

from evalmesh_deploy.kubernetes.files import BASE, main, render

__all__ = ["BASE", "main", "render"]
