"""An OpenAI-compatible HTTP server for tnlm models (`tnlm serve`; needs the `serve` extra).

Three layers, each importable on its own:
- schemas.py: the wire format (strictly validated requests, responses, errors as values);
- service.py, scheduler.py, state_cache.py, prompts.py: the serving logic. One scheduler thread owns
  the model and runs continuous batching (generation/batch.py); kept conversation states let a next
  turn feed only its new tokens;
- app.py: the FastAPI routes; server.py puts everything together and runs uvicorn.
"""
