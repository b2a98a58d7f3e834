"""The summary table's shape: one long table (run, experiment, stage, metric, value, unit, source) that the summary
stage writes and the plots and slides read. Here, below both, so that the readers need not import the stage."""

COLUMNS = ["run", "experiment", "stage", "metric", "value", "unit", "source"]
