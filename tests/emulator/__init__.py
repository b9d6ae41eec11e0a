"""The emulator's own tests: one file per part of it."""
