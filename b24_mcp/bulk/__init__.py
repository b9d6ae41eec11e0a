"""A set of items (ids, or a filter): selection, reading, preview, the run of batches, results."""
