"""The ``docker`` backend: one fresh, locked-down container per evaluation (see README.md)."""

from .container import LABEL_DEADLINE, LABEL_OWNER
from .sandbox import DEFAULT_IMAGES, DockerConfig, DockerSandbox

__all__ = ["DEFAULT_IMAGES", "LABEL_DEADLINE", "LABEL_OWNER", "DockerConfig", "DockerSandbox"]
