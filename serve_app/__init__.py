"""Ray Serve deployments: thin adapters over ``pipelines``."""

API_PREFIX = "/api/background-removal"  # spec §3: every endpoint lives under it
