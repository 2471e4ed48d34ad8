"""Train a Keras MLP and a scikit-learn MLPClassifier on the same data and compare them."""

import os

# The product does not phone home: MLflow 3 sends usage telemetry unless told not
# to (DVC's own analytics are off in .dvc/config). Set before any stage imports MLflow.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
