"""What a run leaves for people and dashboards: the loggers' vlr behaviour (CSV, W&B, MLflow),
metrics.json and the console table, offline W&B run files, and many runs logged as W&B media."""
