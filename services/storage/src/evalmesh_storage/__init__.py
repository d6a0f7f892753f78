"""evalmesh storage: the system of record for evaluations, their output and API keys.

The domain (``domain``, ``creation``, ``evaluations``, ``state_machine``, ``output``, ``queue``,
``retention``, ``keys``, ``tokens``, ``migrate``, ``db``) never imports grpc; ``servicer`` and
``app`` put it on the wire as ``evalmesh.storage.v1.StorageService``.
"""

__all__: list[str] = []
