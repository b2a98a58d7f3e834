"""Fine-tune engines: stock LitGPT (the reference) and the fast engine."""
