"""MLflow: the idempotent ingest of a results folder (``python -m tafs mlflow-ingest``)."""
