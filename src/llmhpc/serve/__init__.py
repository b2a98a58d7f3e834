"""Serving a LitGPT checkpoint to HELM over HTTP (/process, /tokenize, /decode): the request schema (schema),
token choice, log-probabilities and stop sequences (sampling), the batching engine with a KV cache slot per
sequence (engine), the FastAPI app (app) and the `llmhpc-serve` command (cli)."""
