"""A Bitrix24 portal emulator: the sandbox for the demo, `--sandbox` and the tests."""
