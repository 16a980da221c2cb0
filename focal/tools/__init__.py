"""Tools the agent can call: argument validation against JSON Schema and the HTTP executor.

Tool definitions are tenant configuration stored by the ConfigStore; this package holds what is
not storage: the HTTP call spec of a definition (``models``), the JSON Schema checks (``schema``)
and the executor that makes the outbound call (``http``).
"""
