"""The one exception tree: its shape matches the drawing in ``focal/errors.py``."""

from __future__ import annotations

import builtins
import inspect
import re

import pydantic
import pytest

import focal.errors as errors
from focal.errors import (
    AuthenticationError,
    ConcurrentTurnError,
    ConfigurationError,
    ConflictError,
    ContentFilterError,
    ContextWindowExceededError,
    ConversationBusyError,
    FocalError,
    InvalidDataError,
    InvalidResponseError,
    ModelError,
    NotFoundError,
    ProviderError,
    ProviderInputError,
    ProviderUnavailableError,
    RateLimitError,
    SchemaVersionError,
    StaleRevisionError,
    StoreConnectionError,
    StoreError,
)

PARENT: dict[type[FocalError], type[Exception]] = {
    FocalError: Exception,
    ConfigurationError: FocalError,
    StoreError: FocalError,
    StoreConnectionError: StoreError,
    NotFoundError: StoreError,
    ConflictError: StoreError,
    StaleRevisionError: ConflictError,
    ConcurrentTurnError: ConflictError,
    ConversationBusyError: ConflictError,
    InvalidDataError: StoreError,
    SchemaVersionError: StoreError,
    ProviderError: FocalError,
    AuthenticationError: ProviderError,
    RateLimitError: ProviderError,
    ModelError: ProviderError,
    ContentFilterError: ProviderError,
    ContextWindowExceededError: ProviderError,
    ProviderUnavailableError: ProviderError,
    InvalidResponseError: ProviderError,
    ProviderInputError: ProviderError,
}


def module_classes() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == errors.__name__
    }


def docstring_names() -> set[str]:
    assert errors.__doc__ is not None
    return set(re.findall(r"[├└]── (\w+)", errors.__doc__)) | {"FocalError"}


@pytest.mark.parametrize(("child", "parent"), PARENT.items(), ids=[c.__name__ for c in PARENT])
def test_each_class_has_the_parent_drawn_in_the_docstring(
    child: type[BaseException], parent: type[BaseException]
) -> None:
    assert child.__bases__ == (parent,)
    assert issubclass(child, FocalError) or child is FocalError


def test_docstring_and_module_name_the_same_classes() -> None:
    assert docstring_names() == set(module_classes()) == {cls.__name__ for cls in PARENT}


def test_store_and_provider_branches_are_disjoint() -> None:
    stores = {cls for cls in PARENT if issubclass(cls, StoreError)}
    providers = {cls for cls in PARENT if issubclass(cls, ProviderError)}
    assert len(stores) == 9 and len(providers) == 9
    assert not stores & providers
    assert not issubclass(ConfigurationError, StoreError | ProviderError)


def test_no_name_shadows_a_builtin_or_pydantic_exception() -> None:
    names = set(module_classes())
    assert not names & set(dir(builtins))
    assert "ConnectionError" not in names and "ValidationError" not in names
    assert not issubclass(StoreConnectionError, builtins.ConnectionError)
    assert not issubclass(InvalidDataError, pydantic.ValidationError | ValueError)


def test_catching_the_root_catches_every_focal_error() -> None:
    for cls in PARENT:
        instance: FocalError = (
            cls("boom") if not issubclass(cls, ProviderError) else cls("boom", provider="p")
        )
        with pytest.raises(FocalError, match="boom"):
            raise instance


def test_provider_errors_carry_provider_and_status() -> None:
    error = ProviderUnavailableError("overloaded", provider="anthropic", status_code=529)
    assert (error.provider, error.status_code, str(error)) == ("anthropic", 529, "overloaded")
    bare = ModelError("unknown model")
    assert bare.provider is None and bare.status_code is None


def test_rate_limit_error_carries_retry_after() -> None:
    error = RateLimitError("slow down", provider="openai", status_code=429, retry_after=2.5)
    assert error.retry_after == 2.5
    assert (error.provider, error.status_code, str(error)) == ("openai", 429, "slow down")
    assert RateLimitError("slow down").retry_after is None


def test_translated_errors_keep_their_cause() -> None:
    cause = OSError("connection refused")
    with pytest.raises(StoreConnectionError) as caught:
        try:
            raise cause
        except OSError as exc:
            raise StoreConnectionError("database unreachable") from exc
    assert caught.value.__cause__ is cause
