"""The monitoring dashboard (app/dashboard_monitoring.py): versions, evaluations, training runs, feedback,
knowledge base and answer latency, in a browser."""
from __future__ import annotations

from cli.feedback import key_option, page_key, serve_page
from cli.registry import command, option
from cli.texts import TEXTS
from common.config import Settings

PAGE = "dashboard_monitoring.py"
DEFAULT_PORT = 8502  # the feedback page has 8501: both can be open at once


def menu_dashboard(assistant, texts: dict) -> None:
    serve_page(PAGE, assistant.settings, "127.0.0.1", DEFAULT_PORT, texts, announce="dashboard")


@command("dashboard", "serve the monitoring dashboard: versions, evaluations, training, feedback, latency",
         option("--host", default="127.0.0.1", help="address to bind (default: this machine only)"),
         option("--port", type=int, default=DEFAULT_PORT),
         key_option)
def dashboard(settings: Settings, arguments) -> int:
    """Serve the monitoring dashboard until Ctrl-C. It only reads Apprenti's files and loads no model."""
    key = page_key(arguments.host, arguments.key)
    return serve_page(PAGE, settings, arguments.host, arguments.port, TEXTS["en"], announce="dashboard", key=key)
