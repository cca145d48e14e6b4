"""Promises of the tree itself: what stays out of git, and imports that flow one way."""
import ast
import subprocess

from conftest import ROOT

ENTRY_POINTS = {"cli_app", "rag_module", "knowledge_base", "fine_tune_model", "test_model"}


def test_users_data_is_never_committed():
    for path in ["data/feedback.jsonl", "data/dataset_rlhf.jsonl", "learning_data.txt", ".learning_data.txt.lock",
                 "chroma_db_store/x",
                 "tinyllama_finetuned", "tinyllama_finetuned/x", ".tinyllama_finetuned.123.link",
                 "models/versions/v20261127-101500/manifest.json", "models/SmolLM2-135M-Instruct/model.safetensors",
                 "reports/base/report.json", "data/answers.jsonl", "apprenti.log"]:
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path


def imports_of(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
    return names


def test_imports_flow_from_entry_points_to_domain_to_helpers():
    """common/ imports nothing of ours; the domain folders no entry point, no cli/ or app/, and each other
    one way only (store and training use inference, never the reverse; training asks questions as answers do
    through inference/prompts.py, not the front door); the entry points' imports of each other go one way too
    (cli → rag → knowledge base)."""
    ours = {path.parent.name for path in ROOT.glob("*/__init__.py")} | ENTRY_POINTS
    layers = {"common": set(), "store": {"common", "inference"}, "inference": {"common"}, "feedback": {"common"},
              "training": {"common", "inference", "monitoring", "store"},
              "alignment": {"common", "inference", "training", "evaluation", "feedback", "monitoring", "store",
                            "knowledge_base"},
              "evaluation": {"common", "store", "inference", "training", "monitoring", "rag_module", "knowledge_base"},
              "monitoring": {"common", "feedback", "inference"}, "conversation": {"common", "store"},
              "server": {"common", "inference", "feedback", "rag_module"}}
    for package, allowed in layers.items():
        for path in (ROOT / package).glob("*.py"):
            found = (imports_of(path) & ours) - {package}
            assert found <= allowed, (path, found - allowed)
    assert imports_of(ROOT / "knowledge_base.py") & ours <= {"common", "store"}
    assert imports_of(ROOT / "rag_module.py") & ours <= {"common", "store", "inference", "monitoring", "knowledge_base",
                                                         "conversation"}
