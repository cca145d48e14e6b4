"""MLflow, for a team: when MLFLOW_TRACKING_URI is set, every training run (through the trainers' own
`report_to`) and every evaluation by the gate are logged there too. Nothing is sent anywhere otherwise."""
from __future__ import annotations

import os

from common.messages import notice

EXPERIMENT = "apprenti"  # unless MLFLOW_EXPERIMENT_NAME says otherwise, as the trainers' callback reads it


def tracking_uri() -> str | None:
    return os.environ.get("MLFLOW_TRACKING_URI") or None


def report_to() -> str:
    """What the trainers' `report_to` takes: their MLflow callback logs parameters, loss and learning rate."""
    return "mlflow" if tracking_uri() else "none"


def log_evaluation(version_id: str, report: dict, verdict: str | None = None, failed: str = "") -> None:
    """One MLflow run per evaluation: its metrics, and the version and the gate's verdict as tags. A server
    that does not answer costs a notice, never the version."""
    if not tracking_uri():
        return
    try:
        import mlflow
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT)
        with mlflow.start_run(run_name=f"evaluate {version_id}"):
            mlflow.set_tags({"apprenti.version": version_id, "apprenti.model": report["model"],
                             "apprenti.verdict": verdict or "", "apprenti.failed": failed,
                             "apprenti.qa_set": report["qa_set"]})
            mlflow.log_metrics({name: value for name, value in report["metrics"].items() if value is not None})
    except Exception as error:  # an unreachable or refusing server must not undo a finished training
        notice(f"could not log the evaluation to MLflow at {tracking_uri()}: {error}")
