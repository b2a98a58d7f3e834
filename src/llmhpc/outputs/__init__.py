"""What a run leaves for people: plots, the slide deck, the submission archive."""
