"""The web console: page shells served by ``portway serve`` itself, and the one
ES module and stylesheet that fill them from the public API in the browser."""
