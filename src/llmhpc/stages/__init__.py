"""The workflow stages, one module per rule file of the same name (workflow/rules/<stage>.smk)."""
