"""Fine-tune engines: stock LitGPT (the reference) and the fsdp2 engine."""
