"""Envoy edge configuration for evalmesh."""

from evalmesh_envoy.config import EdgeSettings, build_bootstrap, render_yaml

__all__ = ["EdgeSettings", "build_bootstrap", "render_yaml"]
