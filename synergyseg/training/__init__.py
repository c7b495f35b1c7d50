"""The training run: its configuration, recipe (loss, optimizer, schedule), callbacks and strategies."""
