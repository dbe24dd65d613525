"""A scripted MCP client built on the official Python `mcp` SDK, for the interop tests.

usage:
  client.py URL [--token T] --mode legacy|auto|2026-07-28 [--list-tools] [--list-resources]
            [--call NAME [--args JSON]]... [--keep-errors]
  client.py --stdio [--env K=V]... --mode M [checks...] -- CMD ARGS...

Prints one JSON object on stdout with what it observed:
  {"protocol_version": ..., "server_info": {...}|null, "tools": [names], "resources": [uris],
   "resource_pages": n, "calls": [{"name": ..., "is_error": bool, "result": {...}}]}
Exits 1 (traceback on stderr) on any exception, including a connection refused with 401.
A tool result with isError is reported in "calls", not as a failure. With --keep-errors, a call
answered with a JSON-RPC error is reported too, as {"name": ..., "error": {"code", "message"}},
and the next calls are still made.
"""

import argparse
import asyncio
import json
import sys
import traceback

import httpx2
from mcp import Client, MCPError
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

TIMEOUT = 30


class AddCall(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        namespace.calls.append([values, {}])


class SetArgs(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        if not namespace.calls:
            parser.error("--args must follow a --call")
        namespace.calls[-1][1] = json.loads(values)


def parse(argv: list[str]) -> argparse.Namespace:
    cmd: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", nargs="?")
    p.add_argument("--token")
    p.add_argument("--mode", default="legacy")
    p.add_argument("--stdio", action="store_true")
    p.add_argument("--env", action="append", default=[], help="K=V for the stdio server")
    p.add_argument("--list-tools", action="store_true")
    p.add_argument("--list-resources", action="store_true")
    p.add_argument("--call", action=AddCall, metavar="NAME")
    p.add_argument("--args", action=SetArgs, metavar="JSON")
    p.add_argument("--keep-errors", action="store_true", help="report JSON-RPC errors of calls")
    p.set_defaults(calls=[])
    a = p.parse_args(argv)
    a.cmd = cmd
    if a.stdio == bool(a.url) or (a.stdio and not cmd):
        p.error("give either a URL, or --stdio with -- CMD ARGS...")
    return a


async def run(a: argparse.Namespace, transport) -> dict:
    out: dict = {}
    async with Client(transport, mode=a.mode, read_timeout_seconds=TIMEOUT) as client:
        out["protocol_version"] = client.protocol_version
        info = client.server_info
        out["server_info"] = info.model_dump(mode="json", exclude_none=True, by_alias=True) if info else None
        if a.list_tools:
            names, cursor = [], None
            while True:
                page = await client.list_tools(cursor=cursor)
                names += [t.name for t in page.tools]
                cursor = page.next_cursor
                if not cursor:
                    break
            out["tools"] = names
        if a.list_resources:
            uris, cursor, pages = [], None, 0
            while True:
                page = await client.list_resources(cursor=cursor)
                pages += 1
                uris += [str(r.uri) for r in page.resources]
                cursor = page.next_cursor
                if not cursor:
                    break
            out["resources"], out["resource_pages"] = uris, pages
        out["calls"] = []
        for name, args in a.calls:
            try:
                res = await client.call_tool(name, args)
            except MCPError as e:
                if not a.keep_errors:
                    raise
                out["calls"].append({"name": name, "error": {"code": e.code, "message": e.message}})
                continue
            out["calls"].append(
                {
                    "name": name,
                    "is_error": bool(res.is_error),
                    "result": res.model_dump(mode="json", exclude_none=True, by_alias=True),
                }
            )
    return out


async def main(a: argparse.Namespace) -> dict:
    if a.stdio:
        env = dict(kv.split("=", 1) for kv in a.env) or None
        return await run(a, StdioServerParameters(command=a.cmd[0], args=a.cmd[1:], env=env))
    headers = {"Authorization": f"Bearer {a.token}"} if a.token else {}
    http = create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(10.0, read=TIMEOUT))
    async with http:
        return await run(a, streamable_http_client(a.url, http_client=http))


if __name__ == "__main__":
    args = parse(sys.argv[1:])
    try:
        result = asyncio.run(asyncio.wait_for(main(args), timeout=2 * TIMEOUT))
    except BaseException as e:  # noqa: BLE001 - report everything, including ExceptionGroups
        traceback.print_exception(e, file=sys.stderr)
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))
