"""HTTP glue only: parse, authenticate, call serving, return JSON or SSE."""
