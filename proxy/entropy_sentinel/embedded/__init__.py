"""The embedded upstream: a llama.cpp server with Gemma 3 270M, built and cached on first use."""

from entropy_sentinel.embedded.llama_server import LocalLlamaServer, ensure_model, ensure_server_binary

__all__ = ["LocalLlamaServer", "ensure_model", "ensure_server_binary"]
