"""The menu: the prototype's five entries (5 is still Quit), and the later ones after it."""
from __future__ import annotations

from cli.alignment import menu_learn_from_feedback
from cli.answers import MenuConversation
from cli.dashboard import menu_dashboard
from cli.feedback import menu_ui
from cli.knowledge import menu_add, menu_ingest
from cli.learning import menu_finetune, menu_learn
from cli.status import status_line
from cli.texts import TEXTS, interface_language
from common.config import Settings
from common.errors import ApprentiError

QUIT = "5"
# Menu 1 (asking) is MenuConversation.ask, made by run_menu: it keeps its conversation as long as the menu runs.
MENU_ACTIONS = {"2": menu_add, "3": menu_learn, "4": menu_finetune, "6": menu_ingest, "7": menu_ui,
                "8": menu_dashboard, "9": menu_learn_from_feedback}


def run_menu(settings: Settings, arguments=None) -> int:
    from rag_module import Assistant
    texts = TEXTS[interface_language()]
    assistant = Assistant(settings)
    actions = {"1": MenuConversation(settings).ask, **MENU_ACTIONS}
    print(f"Apprenti · {status_line(settings)}")
    while True:
        print()
        for number, label in enumerate(texts["menu"], 1):
            print(f"{number}. {label}")
        try:
            choice = input(texts["choice"]).strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if choice == QUIT:
            print(texts["bye"])
            return 0
        if choice not in actions:
            print(texts["bad_choice"])
            continue
        try:
            actions[choice](assistant, texts)
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print(texts["interrupted"])
        except ApprentiError as error:
            print(f"error: {error}")
