"""OpenAI-compatible HTTP server with batched decoding (`tribit serve`)."""
