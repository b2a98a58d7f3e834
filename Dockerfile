# syntax=docker/dockerfile:1.10
# The NeurIPS 2023 "1 LLM + 1 GPU" submission form: an image whose HTTP server answers HELM (POST /process,
# /tokenize, /decode) on port 8080, built from the same set-up as the README: a venv from the pinned requirements
# and this package (`pip install -r envs/... -e .`). Weights are never in the repository or the build context
# (.dockerignore keeps results/ out): they are fetched at build time, or bound at run time.
#
#   docker build -t llmhpc-serve .                                   # weights bound at run time:
#   docker run --gpus all -p 8080:8080 -v $PWD/results/finetune/lora/out/final:/checkpoint:ro llmhpc-serve
#
#   docker build -t llmhpc-serve --build-arg CHECKPOINT_URL=https://.../final.tar.gz \
#       --build-arg CHECKPOINT_SHA256=<sha256> .                     # a LitGPT checkpoint (tar.gz) fetched at build
#   docker build -t llmhpc-serve --build-arg HF_REPO=meta-llama/Llama-2-7b-hf \
#       --secret id=hf_token,env=HF_TOKEN .                          # a hub model, downloaded and converted at build
#
# HELM then runs with HELM_HTTP_MODEL_BASE_URL=http://localhost:8080 (its default).
FROM python:3.11-slim

ARG REQUIREMENTS=envs/cuda.txt
WORKDIR /opt/llmhpc
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates && rm -rf /var/lib/apt/lists/*
COPY envs/ envs/
COPY pyproject.toml README.md ./
COPY src/ src/
# The README's set-up line; mpi4py (multi-node fine-tunes only) needs an MPI toolchain the serving image lacks.
RUN grep -v '^mpi4py' "$REQUIREMENTS" > /tmp/requirements.txt \
    && python3 -m venv .venv && .venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt -e . \
    && rm /tmp/requirements.txt
ENV PATH=/opt/llmhpc/.venv/bin:$PATH

# Weights, optional at build time (else bind a checkpoint directory to /checkpoint at run time).
ARG CHECKPOINT_URL=""
ARG CHECKPOINT_SHA256=""
ARG HF_REPO=""
RUN --mount=type=secret,id=hf_token,env=HF_TOKEN set -eu; mkdir -p /checkpoint; \
    if [ -n "$CHECKPOINT_URL" ]; then \
        curl -fsSL "$CHECKPOINT_URL" -o /tmp/checkpoint.tar.gz; \
        if [ -n "$CHECKPOINT_SHA256" ]; then echo "$CHECKPOINT_SHA256  /tmp/checkpoint.tar.gz" | sha256sum -c -; fi; \
        tar -xzf /tmp/checkpoint.tar.gz -C /checkpoint --strip-components=1; rm /tmp/checkpoint.tar.gz; \
    elif [ -n "$HF_REPO" ]; then \
        litgpt download "$HF_REPO" --checkpoint_dir /tmp/hub; mv /tmp/hub/"$HF_REPO"/* /checkpoint/; rm -rf /tmp/hub; \
    fi

EXPOSE 8080
CMD ["llmhpc-serve", "--checkpoint", "/checkpoint", "--host", "0.0.0.0", "--port", "8080"]
