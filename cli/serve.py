"""The OpenAI-compatible API (server/api.py) on this machine, for the tools that speak it."""
from __future__ import annotations

import os
import socket
import sys

from cli.feedback import LOCAL_HOSTS
from cli.registry import command, option
from common.config import Settings
from common.errors import ApprentiError

API_KEY_VARIABLE = "APPRENTI_API_KEY"


@command("serve", "serve the OpenAI-compatible API: /v1/chat/completions, /v1/completions, /v1/models, "
                  "/v1/embeddings, /v1/feedback (--port 8000)",
         option("--host", default="127.0.0.1", help="address to bind (default: this machine only)"),
         option("--port", type=int, default=8000),
         option("--api-key", help=f"the key every request must bring (Authorization: Bearer KEY); required to "
                                  f"bind any address but this machine's. Better set {API_KEY_VARIABLE}: a command "
                                  "line is visible to every user of the machine"))
def serve(settings: Settings, arguments) -> int:
    """Serve the OpenAI-compatible API. Answers are grounded in the knowledge base as `ask` does, with their
    sources in an extra field; the model 'apprenti' is the one in use (the base model with --base), and 'base'
    can be asked for by name. Requests are answered one at a time, the others wait their turn. Without a key
    (--api-key, or APPRENTI_API_KEY), only this machine may call it, and web pages of other sites never may."""
    api_key = arguments.api_key or os.environ.get(API_KEY_VARIABLE) or None
    if arguments.host not in LOCAL_HOSTS and not api_key:
        raise ApprentiError(f"--host {arguments.host} makes the API reachable from other machines: set "
                            f"{API_KEY_VARIABLE}=KEY (or give --api-key KEY) too, which every request must then bring")
    try:  # said plainly now, rather than by uvicorn's log after the address was announced
        family = socket.AF_INET6 if ":" in arguments.host else socket.AF_INET
        with socket.create_server((arguments.host, arguments.port), family=family):
            pass
    except OSError as error:
        raise ApprentiError(f"cannot serve on {arguments.host}:{arguments.port}: {error.strerror}; choose another "
                            "--port or --host") from None
    if arguments.host not in LOCAL_HOSTS:
        print(f"warning: the API is reachable from other machines ({arguments.host}); requests need the key",
              file=sys.stderr)
    import uvicorn

    from server.api import create_app
    in_use = "the base model" if not settings.use_finetuned else "the model in use"
    print(f"Apprenti's OpenAI-compatible API: http://{arguments.host}:{arguments.port}/v1 "
          f"(model 'apprenti': {in_use}; Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(settings, api_key), host=arguments.host, port=arguments.port, log_level="warning")
    return 0
