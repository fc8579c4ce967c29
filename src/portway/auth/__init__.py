"""Personal access tokens and the principal behind a request."""
