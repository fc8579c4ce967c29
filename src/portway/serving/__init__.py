"""Wire requests to domain requests and back; knows models, not HTTP."""
