"""Ray Serve deployments: thin adapters over ``pipelines``."""
