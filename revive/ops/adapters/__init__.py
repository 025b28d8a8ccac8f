"""The built-in adapters for real ops tools, one module per tool (see ``revive.ops.plugins``)."""
