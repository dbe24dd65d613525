"""An MCP host that knows only the gateway's URL and its OAuth client credentials, on the official
Python `mcp` SDK's own OAuth support (`ClientCredentialsOAuthProvider`), for the OIDC tests.

usage: oauth_client.py URL CLIENT_ID CLIENT_SECRET SCOPE TOOL ARGS_JSON

The SDK gets 401 from the gateway, follows `resource_metadata` to the protected resource
metadata (RFC 9728), from there to the authorization server's metadata, gets a client-credentials
token for the gateway's resource (RFC 8707) and calls TOOL. No issuer is given: the gateway's
metadata is the only place the provider is learnt from.

Prints one JSON object: {"result": <tool result>, "token": {"scope": ..., "expires_in": ...}}
(never the token). Exits 1 with a traceback on stderr on any failure.
"""

import asyncio
import json
import sys
import traceback
import warnings

import httpx2
from mcp import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

TIMEOUT = 30


class MemoryStorage:
    """Tokens and client information in memory only (the SDK's TokenStorage protocol)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


async def main(url: str, client_id: str, secret: str, scope: str, tool: str, args: dict) -> dict:
    storage = MemoryStorage()
    with warnings.catch_warnings():
        # Omitting `issuer` is deprecated in the SDK; here it is the point: the host learns the
        # authorization server from the gateway's metadata alone.
        warnings.simplefilter("ignore")
        auth = ClientCredentialsOAuthProvider(
            server_url=url, storage=storage, client_id=client_id, client_secret=secret, scope=scope
        )
    http = create_mcp_http_client(auth=auth, timeout=httpx2.Timeout(10.0, read=TIMEOUT))
    async with http:
        async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=TIMEOUT) as client:
            result = await client.call_tool(tool, args)
    token = storage.tokens
    return {
        "result": result.model_dump(mode="json", exclude_none=True, by_alias=True),
        "token": {"scope": token.scope, "expires_in": token.expires_in} if token else None,
    }


if __name__ == "__main__":
    url, client_id, secret, scope, tool, args = sys.argv[1:7]
    try:
        out = asyncio.run(asyncio.wait_for(main(url, client_id, secret, scope, tool, json.loads(args)), 2 * TIMEOUT))
    except BaseException as e:  # noqa: BLE001 - report everything, including ExceptionGroups
        traceback.print_exception(e, file=sys.stderr)
        sys.exit(1)
    print(json.dumps(out))
