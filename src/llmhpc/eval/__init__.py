"""HellaSwag: the task as lm-evaluation-harness defines it, the reference scorer and the fast scorer."""
