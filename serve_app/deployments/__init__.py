"""The deployments of the graph, one module per stage; each a thin adapter over ``pipelines``.

::

    HTTP / handle ─► Ingress ─► Preprocess ─► Inference ─► Postprocess ─► Ingress
                        │                         │
                        ├──► RateLimiter          └──► Telemetry (model reports)
                        └──► Telemetry (request samples, /health, /ready)
"""
