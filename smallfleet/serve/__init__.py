"""The OpenAI-compatible gateway: routing, cascade to escalation tiers, request log, metrics.

`app.py` is the thin HTTP layer, `gateway.py` the engine it calls, `protocol.py` the
request/response shapes, `fleet.py` the loaded specialists and router, `batching.py` the
per-model inference threads. The tiers themselves live in `smallfleet.tiers`.
"""
