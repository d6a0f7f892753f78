"""How evalmesh is put together and run: the catalog of its components (``catalog``), which the
local launcher (``local``), docker-compose.yml (rendered by ``compose``) and Kubernetes manifests
derive from; the local CA and certificates (``certs``); the first admin key (``admin_key``); and
the one-shot steps of docker-compose.yml (``python -m evalmesh_deploy setup|bootstrap``).

Nothing is imported here, so reading the catalog loads neither grpc nor cryptography.
"""
