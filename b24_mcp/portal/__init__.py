"""The portal client: one POST on the wire, the answer read by its body, the call policy, the credentials."""
