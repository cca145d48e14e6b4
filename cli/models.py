"""Model versions: list them, show one, choose the one that answers, roll back, compare two, prune old ones
(inference/versions.py holds the work)."""
from __future__ import annotations

import argparse
import json

from cli.registry import Command, command, option
from common.config import Settings
from common.errors import ApprentiError
from common.messages import notice
from inference.versions import BASE, Versions

# The actions of `models`, registered like the commands themselves (cli/registry.py), one level down.
ACTIONS: dict[str, Command] = {}


def action(name: str, help: str, *options):
    def register(run):
        ACTIONS[name] = Command(name, help, options, run)
        return run
    return register


def add_actions(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for entry in ACTIONS.values():
        subparser = actions.add_parser(entry.name, help=entry.help, description=entry.run.__doc__ or entry.help)
        for flags, settings in entry.options:
            subparser.add_argument(*flags, **settings)


@command("models", "model versions: list, show ID, use ID [--force], rollback, diff A B, prune --keep N",
         add_actions)
def models(settings: Settings, arguments) -> int:
    """Every training run makes a version; one of them, or the base model, answers: the model in use."""
    return ACTIONS[arguments.action].run(Versions(settings), arguments)


def named(version_id: str) -> str:
    return "the base model" if version_id == BASE else f"version {version_id}"


def number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def flat(fields: dict, prefix: str = "") -> dict:
    """Nested settings as one level of dotted keys: {"lora": {"rank": 8}} -> {"lora.rank": 8}."""
    out = {}
    for key, value in fields.items():
        if isinstance(value, dict) and value:
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def print_fields(title: str, fields) -> None:
    if not fields:
        print(f"{title}: none")
        return
    print(f"{title}:")
    for key, value in flat(fields).items():
        print(f"  {key}: {number(value) if not isinstance(value, list) else json.dumps(value)}")


def failures(version) -> list[str]:
    """The metrics the gate failed the version on, one clause each."""
    from evaluation.gate import explain
    return [explain([finding]) for finding in (version.manifest.get("gate") or {}).get("findings", [])
            if not finding.get("passed", True)]


@action("list", "every version: id, parent, method, date and verdict; * marks the model in use",
        option("--json", action="store_true",
               help='print one JSON array: [{"id", "parent", "method", "created", "verdict", "champion"}]'))
def list_versions(versions: Versions, arguments) -> int:
    listed, problems = versions.all()
    for problem in problems:
        notice(problem)
    champion = versions.champion()
    if champion not in {version.id for version in listed}:
        champion = BASE  # its manifest is unreadable: the base model answers (inference/versions.py)
    rows = [version.summary(champion) for version in listed]
    if arguments.json:
        print(json.dumps(rows))
        return 0
    width = max(len(row["id"]) for row in rows)
    print(f"  {'id':<{width}}  {'parent':<{width}}  {'method':<12}  {'created':<19}  verdict")
    for row in rows:
        print(f"{'*' if row['champion'] else ' '} {row['id']:<{width}}  {row['parent'] or '-':<{width}}  "
              f"{row['method']:<12}  {row['created'] or '-':<19}  {row['verdict']}")
    return 0


@action("show", "one version: method, base model, data, training, metrics and the gate's verdict",
        option("id", help="a version id ('base': the base model)"),
        option("--json", action="store_true", help="print its manifest.json"))
def show(versions: Versions, arguments) -> int:
    version = versions.get(arguments.id)
    manifest = version.manifest
    if arguments.json:
        print(json.dumps(manifest, indent=2))
        return 0
    in_use = " (the model in use)" if version.id == versions.champion() else ""
    print(f"{named(version.id)}{in_use}")
    print(f"base model: {manifest.get('base_model')}")
    print(f"parent: {manifest.get('parent') or '-'}")
    weights = f", {manifest['weights']} weights" if manifest.get("weights") else ""
    print(f"method: {manifest.get('method', BASE)}{weights}")
    print(f"created: {manifest.get('created') or '-'}")
    if version.folder is None:
        return 0
    print_fields("config", manifest.get("config"))
    print_fields("data", manifest.get("data"))
    print_fields("training", {key: value for key, value in (manifest.get("training") or {}).items()
                              if key != "loss_history"})
    print_fields("metrics", manifest.get("metrics"))
    gate = manifest.get("gate") or {}
    if "skipped" in gate:
        print(f"gate: skipped ({gate['skipped']}); verdict {version.verdict}")
        return 0
    against = f" against {named(gate['champion'])}" if gate.get("champion") else ""
    print(f"gate: {gate.get('verdict', '-')}{against}; verdict {version.verdict}")
    for failure in failures(version):
        print(f"  failed: {failure}")
    return 0


@action("use", "answer with version ID from now on ('base': the base model)",
        option("id", help="a version id, or 'base'"),
        option("--force", action="store_true", help="use it even though the promotion gate refused it"))
def use(versions: Versions, arguments) -> int:
    version = versions.get(arguments.id)
    if version.id == versions.champion():
        print(f"{named(version.id).capitalize()} is already the model in use: nothing changed.")
        return 0
    forced = version.verdict == "refused"
    if forced and not arguments.force:
        failed = "; ".join(failures(version)) or "it regressed"
        raise ApprentiError(f"the promotion gate refused version '{version.id}': {failed}; add --force to use "
                            "it anyway")
    if version.folder is not None:
        versions.source(version.id)  # a version of another base model cannot answer: say so now, not at a question
    previous = versions.set_champion(version.id, "forced" if forced else "use")
    if forced:
        versions.update_manifest(version, verdict="forced")
    print(f"Now using {named(version.id)} (was {named(previous)}).")
    return 0


@action("rollback", "go back to the model in use before the current one")
def rollback(versions: Versions, arguments) -> int:
    target = versions.previous_champion()
    previous = versions.set_champion(target, "rollback")
    print(f"Rolled back to {named(target)} (was {named(previous)}).")
    return 0


@action("diff", "two versions' metrics side by side with the change, and the config keys that differ",
        option("a", metavar="A", help="a version id ('base': the base model)"),
        option("b", metavar="B", help="another version id"))
def diff(versions: Versions, arguments) -> int:
    a, b = versions.get(arguments.a), versions.get(arguments.b)
    metrics_a, metrics_b = metrics_of(versions, a), metrics_of(versions, b)
    names = list(dict.fromkeys([*metrics_a, *metrics_b]))
    if names:
        width, column = max(map(len, ["metric", *names])), max(len(a.id), len(b.id), 8)
        print(f"{'metric':<{width}}  {a.id:>{column}}  {b.id:>{column}}  change")
        for name in names:
            old, new = metrics_a.get(name), metrics_b.get(name)
            numbers = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (old, new))
            change = f"{new - old:+.4g}" if numbers else ""
            print(f"{name:<{width}}  {number(old):>{column}}  {number(new):>{column}}  {change}")
    else:
        print("metrics: none recorded for either")
    config_a, config_b = flat(a.manifest.get("config") or {}), flat(b.manifest.get("config") or {})
    absent = object()
    differing = [key for key in dict.fromkeys([*config_a, *config_b])
                 if config_a.get(key, absent) != config_b.get(key, absent)]
    if not differing:
        print("config: the same")
    for key in differing:
        print(f"config {key}: {number(config_a.get(key, '(absent)'))} -> {number(config_b.get(key, '(absent)'))}")
    return 0


def metrics_of(versions: Versions, version) -> dict:
    """The gate's evaluation of a version, else its last report's (the base model has only reports)."""
    from evaluation.reports import read_report
    report = read_report(versions.settings, version.id) or {}
    return flat(version.manifest.get("metrics") or report.get("metrics") or {})


@action("prune", "remove old versions: all but the N newest, never the model in use",
        option("--keep", type=int, required=True, metavar="N", help="how many of the newest versions to keep"))
def prune(versions: Versions, arguments) -> int:
    if arguments.keep < 0:
        raise ApprentiError(f"--keep {arguments.keep}: keep 0 or more versions")
    removed = versions.prune(arguments.keep)
    kept = "kept the model in use" + (f" and the {arguments.keep} newest" if arguments.keep else "")
    print(f"Removed {len(removed)} version(s): {', '.join(removed)} ({kept})." if removed
          else f"Nothing to remove ({kept}).")
    return 0
