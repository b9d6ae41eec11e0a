"""What the server tells its operator: the log (`logs`), Prometheus metrics (`metrics`), the call (`tracing`)."""
