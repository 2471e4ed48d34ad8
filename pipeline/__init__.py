"""Train a Keras MLP and a scikit-learn MLPClassifier on the same data and compare them."""

import os
import sys

# The product does not phone home: MLflow 3 sends usage telemetry unless told not
# to (DVC's own analytics are off in .dvc/config). Set before any stage imports MLflow.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _ctrl_c_in_one_line(kind, value, traceback) -> None:
    """The interpreter's last word on an exception nothing caught: Ctrl-C becomes the
    stages' one line and exit code 130; anything else, the usual traceback."""
    if not issubclass(kind, KeyboardInterrupt) or os.environ.get("PIPELINE_DEBUG"):
        sys.__excepthook__(kind, value, traceback)
        return
    from pipeline.errors import exit_stopped

    try:
        exit_stopped(value)
    except SystemExit as stopped:
        sys.stderr.flush()
        os._exit(stopped.code)


# `python -m pipeline.<stage>` imports this package first, while sys.argv[0] is "-m".
# A Ctrl-C during the stage's own imports (TensorFlow, MLflow: seconds), before
# `errors.run_stage` is in charge, then ends in one line, not a traceback. dvc.yaml's
# commands go through `pipeline.client`, which does the same itself.
if sys.argv[:1] == ["-m"]:
    sys.excepthook = _ctrl_c_in_one_line
