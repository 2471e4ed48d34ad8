"""Every file the pipeline reads or writes, relative to the repository root.

`dvc.yaml` names the same paths; `tests/test_paths.py` checks that the two agree.
"""

from pathlib import Path

PARAMS = Path("params.yaml")
DATA = Path("data")

# dataset
DATASET = DATA / "dataset" / "dataset.parquet"
CLASSES = DATA / "dataset" / "classes.json"  # the target's name and its classes, by code

# split
SPLIT = DATA / "split"
TRAIN = SPLIT / "train.parquet"
VALIDATION = SPLIT / "validation.parquet"
TEST = SPLIT / "test.parquet"
PREPROCESSING = SPLIT / "preprocessing.json"  # what was fitted on the train rows, readable
PREPROCESSOR = SPLIT / "preprocessor.skops"  # the same, as a scikit-learn transformer
# replicates.resample_split: replicate r >= 1's own split in <r>/, and manifest.json
SPLIT_REPLICATES = SPLIT / "replicates"

# train_keras
KERAS = DATA / "train_keras"
KERAS_MODEL = KERAS / "model.keras"  # replicate 0, the family's model
KERAS_REPLICATE_MODELS = KERAS / "replicates"  # every replicate's model
KERAS_HISTORY = KERAS / "history.csv"  # the replicates' mean per epoch
KERAS_REPLICATE_HISTORIES = KERAS / "replicate_histories.csv"
KERAS_SUMMARY = KERAS / "summary.json"
KERAS_PREDICTIONS = KERAS / "test_predictions.parquet"
KERAS_MLFLOW_MODEL = KERAS / "mlflow_model.zip"

# train_sklearn
SKLEARN = DATA / "train_sklearn"
SKLEARN_MODEL = SKLEARN / "model.skops"
SKLEARN_REPLICATE_MODELS = SKLEARN / "replicates"
SKLEARN_HISTORY = SKLEARN / "history.csv"
SKLEARN_REPLICATE_HISTORIES = SKLEARN / "replicate_histories.csv"
SKLEARN_SUMMARY = SKLEARN / "summary.json"
SKLEARN_PREDICTIONS = SKLEARN / "test_predictions.parquet"
SKLEARN_MLFLOW_MODEL = SKLEARN / "mlflow_model.zip"

# Both training stages' files by model family, for the stages that read both.
PREDICTIONS = {"keras": KERAS_PREDICTIONS, "sklearn": SKLEARN_PREDICTIONS}
HISTORIES = {"keras": KERAS_HISTORY, "sklearn": SKLEARN_HISTORY}
REPLICATE_HISTORIES = {"keras": KERAS_REPLICATE_HISTORIES, "sklearn": SKLEARN_REPLICATE_HISTORIES}
SUMMARIES = {"keras": KERAS_SUMMARY, "sklearn": SKLEARN_SUMMARY}
# Training time and throughput, beside summary.json but not a DVC output: they differ
# from run to run, and summary.json must hash the same for the same training.
TIMINGS = {"keras": KERAS / "timing.json", "sklearn": SKLEARN / "timing.json"}

# compare, first part: the test metrics, curves and figures that pipeline.evaluate
# computes, in their own folder (dvc.yaml's plots read the curves there)
EVALUATE = DATA / "evaluate"
METRICS = EVALUATE / "metrics.json"
CLASS_REPORT = EVALUATE / "class_report.json"  # precision, recall, F1 per class
REPLICATE_METRICS = EVALUATE / "replicate_metrics.csv"  # every test metric per replicate
CURVES = EVALUATE / "curves"
FIGURES = EVALUATE / "figures"

# compare, then: the verdict for machines (DVC metrics), and the report for people. The
# report sits in reports/, where a user looks first, not among the stage data.
VERDICT = DATA / "compare" / "verdict.json"
# DVC metrics: the verdict and both families' primary metric, short enough for one
# row of `dvc exp show`.
HEADLINE = DATA / "compare" / "headline.json"
DESCRIPTION = DATA / "compare" / "description.md"  # the MLflow parent run's description
REPORTS = Path("reports")
REPORT_MARKDOWN = REPORTS / "comparison.md"
REPORT_HTML = REPORTS / "comparison.html"

# track, the last stage: the MLflow run and model ids and links to them in MLflow's
# UI, and DVC metrics naming the parent run (and the champion version, if promoted).
MLFLOW_RUNS = DATA / "track" / "mlflow_runs.json"
PUBLISHED = DATA / "track" / "published.json"

# The embedded MLflow store, at the root of the main repository (never inside a
# temporary `dvc exp run --queue` copy, which is deleted after the run).
MLFLOW_DATABASE = Path("mlflow.db")
MLFLOW_ARTIFACTS = Path("mlartifacts")

# The hyperparameter search (pipeline.search, not a stage): its file, the embedded
# study storage beside mlflow.db, and per study `<study>/logs/` and `<study>/report/`.
SEARCH = Path("search.yaml")
OPTUNA_DATABASE = Path("optuna.db")
SEARCH_REPORTS = REPORTS / "search"

MODEL_FAMILIES = ("keras", "sklearn")


def roc_curve(family: str) -> Path:
    return CURVES / f"roc_{family}.csv"


def precision_recall_curve(family: str) -> Path:
    return CURVES / f"precision_recall_{family}.csv"


def confusion(family: str) -> Path:
    return CURVES / f"confusion_{family}.csv"
