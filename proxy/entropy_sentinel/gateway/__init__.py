"""The aiohttp shell: forwarding, OpenAI wire rewriting and SSE framing."""
