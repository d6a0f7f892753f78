"""The nats container's health check: JetStream answers on the monitoring port."""

import sys
import urllib.request

URL = "http://127.0.0.1:8222/healthz?js-enabled-only=true"

try:
    with urllib.request.urlopen(URL, timeout=3) as reply:
        sys.exit(0 if reply.status == 200 else 1)
except OSError as error:
    print(f"nats: {error}")
    sys.exit(1)
