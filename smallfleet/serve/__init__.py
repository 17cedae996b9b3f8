"""The OpenAI-compatible gateway: routing, cascade to escalation tiers, request log, metrics.

`app.py` is the thin HTTP layer, `gateway.py` the engine it calls, `protocol.py` the
request/response shapes, `tiers.py` the upstream endpoints, `fleet.py` the loaded
specialists and router, `batching.py` the per-model inference threads.
"""
