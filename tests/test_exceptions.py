"""The error tree: statuses, exit codes, the HTTP body, and re-raising by name."""

from __future__ import annotations

import re

import pytest

from tiffin import exceptions
from tiffin.exceptions import (
    AlreadyExists,
    ArchiveError,
    BundleExists,
    BundleNotFound,
    ConfigError,
    Conflict,
    CorruptArchive,
    DeployError,
    FrameworkError,
    IntegrityError,
    InvalidArgument,
    InvalidTag,
    MalformedRequest,
    MethodNotAllowed,
    MissingDependency,
    ModelExists,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    RouteNotFound,
    ServiceDefinitionError,
    ServiceError,
    ServiceUnavailable,
    TaskFailed,
    TaskNotCompleted,
    TaskNotFound,
    TiffinError,
    Unauthorized,
    UnsafeArchive,
    UnsupportedMediaType,
    ValidationFailed,
    error_class,
)

# class, parent, HTTP status, CLI exit code: the tree drawn in exceptions.py's docstring.
TREE: list[tuple[type[TiffinError], type[Exception], int, int]] = [
    (TiffinError, Exception, 500, 1),
    (ConfigError, TiffinError, 500, 2),
    (InvalidArgument, TiffinError, 400, 2),
    (InvalidTag, InvalidArgument, 400, 2),
    (NotFound, TiffinError, 404, 3),
    (ModelNotFound, NotFound, 404, 3),
    (BundleNotFound, NotFound, 404, 3),
    (TaskNotFound, NotFound, 404, 3),
    (AlreadyExists, TiffinError, 409, 4),
    (ModelExists, AlreadyExists, 409, 4),
    (BundleExists, AlreadyExists, 409, 4),
    (Conflict, TiffinError, 409, 4),
    (TaskNotCompleted, Conflict, 409, 4),
    (ArchiveError, TiffinError, 400, 5),
    (CorruptArchive, ArchiveError, 400, 5),
    (UnsafeArchive, ArchiveError, 400, 5),
    (RequestError, TiffinError, 400, 2),
    (MalformedRequest, RequestError, 400, 2),
    (Unauthorized, RequestError, 401, 2),
    (RouteNotFound, RequestError, 404, 3),
    (MethodNotAllowed, RequestError, 405, 2),
    (PayloadTooLarge, RequestError, 413, 2),
    (UnsupportedMediaType, RequestError, 415, 2),
    (ValidationFailed, RequestError, 422, 2),
    (ServiceUnavailable, TiffinError, 503, 9),
    (RequestTimeout, TiffinError, 504, 9),
    (ServiceError, TiffinError, 500, 9),
    (TaskFailed, ServiceError, 500, 9),
    (ServiceDefinitionError, TiffinError, 500, 2),
    (MissingDependency, TiffinError, 500, 6),
    (FrameworkError, TiffinError, 500, 7),
    (IntegrityError, TiffinError, 500, 8),
    (DeployError, TiffinError, 500, 10),
]


def _defined_error_classes() -> set[type[TiffinError]]:
    return {
        value
        for value in vars(exceptions).values()
        if isinstance(value, type) and issubclass(value, TiffinError)
    }


def test_the_table_covers_every_error_class() -> None:
    assert {cls for cls, *_ in TREE} == _defined_error_classes()


@pytest.mark.parametrize(("cls", "parent", "status", "exit_code"), TREE)
def test_status_exit_code_and_parent(
    cls: type[TiffinError], parent: type[Exception], status: int, exit_code: int
) -> None:
    assert cls.__bases__ == (parent,)
    assert cls.status_code == status
    assert cls.exit_code == exit_code
    error = cls("Something broke. Do this.")
    assert error.status_code == status
    assert error.exit_code == exit_code


def test_the_docstring_tree_matches_the_classes() -> None:
    drawn = re.findall(r"(\w+)\s+(\d{3})\s+exit (\d+)", exceptions.__doc__ or "")
    assert [(name, int(status), int(code)) for name, status, code in drawn] == [
        (cls.__name__, status, code) for cls, _, status, code in TREE
    ]


@pytest.mark.parametrize(("cls", "parent", "status", "exit_code"), TREE)
def test_to_dict_is_the_http_error_body(
    cls: type[TiffinError], parent: type[Exception], status: int, exit_code: int
) -> None:
    error = cls("Model 'iris:v9' not found. Run 'tiffin models list'.", detail={"tag": "iris:v9"})
    assert error.to_dict() == {
        "error": {
            "type": cls.__name__,
            "message": "Model 'iris:v9' not found. Run 'tiffin models list'.",
            "detail": {"tag": "iris:v9"},
        }
    }


def test_message_is_the_str_and_detail_defaults_to_empty() -> None:
    error = NotFound("Nothing here. Look elsewhere.")
    assert str(error) == "Nothing here. Look elsewhere."
    assert error.message == "Nothing here. Look elsewhere."
    assert error.detail == {}
    assert error.to_dict() == {
        "error": {"type": "NotFound", "message": "Nothing here. Look elsewhere.", "detail": {}}
    }


def test_detail_is_a_copy_of_what_was_given() -> None:
    given = {"tag": "iris:v1"}
    error = ModelExists("Exists.", detail=given)
    given["tag"] = "changed"
    assert error.detail == {"tag": "iris:v1"}


def test_detail_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        TiffinError("message", {"a": 1})  # type: ignore[call-arg]


@pytest.mark.parametrize(("cls", "parent", "status", "exit_code"), TREE)
def test_error_class_finds_each_class_by_name(
    cls: type[TiffinError], parent: type[Exception], status: int, exit_code: int
) -> None:
    assert error_class(cls.__name__) is cls


@pytest.mark.parametrize(
    "name", ["", "ValueError", "Exception", "BaseException", "modelnotfound", "Model NotFound"]
)
def test_error_class_falls_back_to_the_base(name: str) -> None:
    assert error_class(name) is TiffinError


def test_error_class_finds_a_subclass_defined_elsewhere() -> None:
    class PluginNotFound(NotFound):
        pass

    assert error_class("PluginNotFound") is PluginNotFound


def test_an_error_body_re_raises_as_the_same_class() -> None:
    sent = UnsafeArchive("Archive a.tar is unsafe. Do not import it.", detail={"member": "../x"})
    body = sent.to_dict()["error"]
    received = error_class(body["type"])(body["message"], detail=body["detail"])
    assert type(received) is UnsafeArchive
    assert received.to_dict() == sent.to_dict()
    assert received.status_code == 400
