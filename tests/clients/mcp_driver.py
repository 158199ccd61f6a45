"""Drives the real `ct-kubecost-mcp-server` over stdio with the Python `mcp` client SDK.

Usage: python mcp_driver.py SERVER_EXECUTABLE CALLS_JSON

The server reads KUBECOST_URL and KUBECOST_API_PREFIX from this process's environment (passed
on). CALLS_JSON is a list of [tool, arguments] pairs. Prints one JSON object on stdout:
{"tools": [{"name", "inputSchema"}...], "calls": [{"tool", "arguments", "isError", "texts",
"structured"}...]}. It asserts nothing: the Rust test (tests/clients.rs) does. Every step is
bounded by a deadline so a hung server cannot hang the test.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

DEADLINE_SECONDS = 90


async def drive(executable: str, calls: list) -> dict:
    env = {k: v for k, v in os.environ.items() if k.startswith("KUBECOST_")}
    env["PATH"] = os.environ.get("PATH", "")
    env["LOG_LEVEL"] = "warning"
    params = StdioServerParameters(command=executable, args=[], env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            out = {
                "tools": [{"name": t.name, "inputSchema": t.inputSchema} for t in listed.tools],
                "calls": [],
            }
            for tool, arguments in calls:
                result = await session.call_tool(tool, arguments)
                out["calls"].append(
                    {
                        "tool": tool,
                        "arguments": arguments,
                        "isError": bool(result.isError),
                        "texts": [c.text for c in result.content if getattr(c, "type", "") == "text"],
                        "structured": result.structuredContent,
                    }
                )
            return out


def main() -> None:
    executable, calls = sys.argv[1], json.loads(sys.argv[2])
    out = asyncio.run(asyncio.wait_for(drive(executable, calls), DEADLINE_SECONDS))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
