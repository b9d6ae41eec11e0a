"""The audit journal: an entry and the store protocol (`record`), the file (`file`), the reader (`reader`)."""
