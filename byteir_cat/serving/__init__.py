"""``byteir-cat serve``: a compiled causal LM behind an OpenAI-compatible HTTP API, with continuous batching
(``engine``), the API itself (``openai_api``), text in and out (``text``) and Prometheus metrics (``metrics``)."""
