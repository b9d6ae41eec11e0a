"""Deleting: confirmation tokens, the gate, the questions, results, the application, one item."""
