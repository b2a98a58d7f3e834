"""Fixtures of the serving tests (registered by the root conftest as a plugin: a second conftest.py would shadow
the root one, whose helpers every test module imports by name): a tiny random LitGPT checkpoint and the server's
app on it, in this process (httpx's ASGI transport)."""

from __future__ import annotations

import asyncio

import httpx
import pytest


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from llmhpc.eval.tinyckpt import write_tiny_litgpt

    return write_tiny_litgpt(tmp_path_factory.mktemp("serve") / "ckpt", family="llama", add_bos=True)


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    import torch

    from llmhpc.serve.cli import build_engine

    torch.manual_seed(0)
    eng = build_engine(tiny_checkpoint, "cpu", max_batch=8, queue_size=64)
    eng.start()
    yield eng
    eng.stop()


@pytest.fixture(scope="module")
def app(engine):
    from llmhpc.serve.app import create_app

    return create_app(engine)


class Client:
    """Synchronous calls into the ASGI app (a str body is sent as is); `many` sends bodies concurrently."""

    def __init__(self, app):
        self.app = app

    async def _send(self, calls):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://serve") as c:
            return await asyncio.gather(*[c.post(path, content=body, headers={"content-type": "application/json"})
                                          if isinstance(body, str) else c.post(path, json=body) for path, body in calls])

    def post(self, path, body) -> httpx.Response:
        return asyncio.run(self._send([(path, body)]))[0]

    def many(self, path, bodies) -> list[httpx.Response]:
        return asyncio.run(self._send([(path, b) for b in bodies]))


@pytest.fixture(scope="module")
def client(app):
    return Client(app)
