"""LLM and embedding providers: the only part of Focal that talks to model vendors.

``llm/base.py`` and ``embedding/base.py`` hold the interfaces the rest of Focal uses;
``factory.py`` builds the configured implementation from ``Settings``; ``retry.py`` is the single
retry/deadline/logging policy; ``errors.py`` maps vendor HTTP errors onto ``focal.errors``.
Vendor SDK types never leave this package.
"""
