"""shipit's Python client: chat and completions over HTTP/SSE, WebSocket or gRPC, sync or async.

    from shipit.client import Client
    with Client(["http://10.0.0.1:8000", "http://10.0.0.2:8000"], protocol="ws") as c:
        answer = c.chat(model="smollm2-135m-instruct", messages=[{"role": "user", "content": "hi"}])
        for chunk in c.chat_stream(model="smollm2-135m-instruct", messages=[...]):
            ...

Answers and chunks are OpenAI's JSON (dicts) whatever the protocol. See docs/protocols.md.
"""

from shipit.client.aio import PROTOCOLS, AsyncClient, RetryPolicy
from shipit.client.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ShipitClientError,
)
from shipit.client.sync import Client

__all__ = [
    "PROTOCOLS",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncClient",
    "Client",
    "RetryPolicy",
    "ShipitClientError",
]
