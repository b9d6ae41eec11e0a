"""Security primitives written once: key derivation (`keys`), sealing and token digests (`sealing`)."""
