"""Model and data sources made by the workflow itself: the tiny random model and the embedded datasets."""
