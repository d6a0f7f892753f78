"""``python -m evalmesh_deploy.kubernetes [DIR]``: write the kustomize base."""

from __future__ import annotations

from evalmesh_deploy.kubernetes.files import main

if __name__ == "__main__":
    raise SystemExit(main())
