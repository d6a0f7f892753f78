"""Envoy edge configuration for evalmesh."""

from evalmesh_envoy.config import HSTS, EdgeSettings, build_bootstrap, render_yaml, security_headers

__all__ = ["HSTS", "EdgeSettings", "build_bootstrap", "render_yaml", "security_headers"]
