"""What a model file may hold, and the check of a skops file against it before loading.

A skops file is a zip with a ``schema.json`` tree of nodes; each node names a loader and
a type (``module.Class``), and loading imports that type and builds it. This module walks
the tree as plain JSON, before skops builds anything, and refuses the file unless every
node is one this module understands and every name it would import is on an exact list:

- types: the engine's own pipelines (:data:`CORE_TYPES`) plus those each registered
  trainer declares in ``saved_types`` (the classes its fitted estimators hold);
- functions: only referenced, never called on load, by exact name (:data:`CORE_FUNCTIONS`
  plus each trainer's ``saved_functions``); a ``functools.partial`` must wrap one of them
  and bind plain data only (numbers, strings, lists, dicts).

No name prefix is trusted: ``numpy.load`` is a ``numpy.*`` name and is refused like any
other function that nobody declared.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automl.exceptions import ConfigError, ModelFileError

AUDITED_PROTOCOLS = frozenset({2})  # skops schema protocols whose loaders this module knows
# the skops loaders (node kinds) of that protocol the audit accepts, each checked by its
# rules below; MethodNode, OperatorFuncNode, MaskedArrayNode and others are refused
LOADERS = frozenset({
    "DictNode", "ListNode", "SetNode", "TupleNode", "DefaultDictNode", "JsonNode", "BytesNode",
    "SliceNode", "CachedNode", "TypeNode", "FunctionNode", "PartialNode", "ObjectNode",
    "ConstructorFromReduceNode", "LossNode", "TreeNode", "NdArrayNode", "DTypeNode",
    "RandomStateNode", "RandomGeneratorNode", "SparseMatrixNode",
})

# Types that are data: JSON-like builtins and numpy scalars. skops stores a numpy scalar
# as an array node naming its type and builds it by calling the type with the array.
_DATA_TYPES = ("builtins.int", "builtins.float", "builtins.str", "builtins.bool", "builtins.bytes",
               "numpy.bool", "numpy.bool_", "numpy.int8", "numpy.int16", "numpy.int32",
               "numpy.int64", "numpy.uint8", "numpy.uint16", "numpy.uint32", "numpy.uint64",
               "numpy.float16", "numpy.float32", "numpy.float64", "numpy.longdouble",
               "numpy.str_", "numpy.bytes_", "numpy.object_", "numpy.datetime64",
               "numpy.timedelta64")
_CONTAINERS = ("builtins.dict", "builtins.list", "builtins.tuple", "builtins.set", "builtins.slice",
               "collections.OrderedDict", "collections.defaultdict", "numpy.ndarray", "numpy.dtype")
# The preprocessing every trainer's pipeline starts with (automl.preprocessing, the MLP's
# net preprocessor) and the bag of fold models the engine may save instead of a refit.
_ENGINE = (
    "sklearn.pipeline.Pipeline", "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.impute._base.SimpleImputer", "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._encoders.OrdinalEncoder",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._target_encoder.TargetEncoder", "sklearn.model_selection._split.KFold",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "sklearn.feature_extraction.text.TfidfVectorizer",
    "sklearn.feature_extraction.text.TfidfTransformer",
    "sklearn.decomposition._truncated_svd.TruncatedSVD",
    "automl.preprocessing.TextFeatures", "automl.preprocessing.MissingFlags",
    "automl.text_embeddings.TextEmbedding",  # sentence embeddings of text columns (no weights inside)
    "automl.ensemble.FoldBag",
)
DATA_TYPES = frozenset(_DATA_TYPES)
CORE_TYPES = frozenset(_DATA_TYPES + _CONTAINERS + _ENGINE)
CORE_FUNCTIONS = frozenset({"automl.preprocessing.datetime_features",
                            "automl.preprocessing.datetime_feature_names"})
BIT_GENERATORS = frozenset({"PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"})


@dataclass(frozen=True)
class Allowlist:
    """Exact dotted names a model file may hold: types (built) and functions (referenced)."""

    types: frozenset[str] = CORE_TYPES
    functions: frozenset[str] = CORE_FUNCTIONS

    def extended(self, owner: str, types: Iterable[str], functions: Iterable[str]) -> Allowlist:
        new_types, new_functions = frozenset(types), frozenset(functions)
        for name in new_types | new_functions:
            if not isinstance(name, str) or "." not in name or name.endswith(".") or "*" in name:
                raise ConfigError(f"trainer '{owner}' declares {name!r} in saved_types/saved_functions; "
                                  "give exact dotted names such as 'lightgbm.sklearn.LGBMClassifier'.")
        return Allowlist(self.types | new_types, self.functions | new_functions)


def trainer_allowlist() -> Allowlist:
    """The core names plus those every registered trainer declares (``saved_types`` and
    ``saved_functions``, optional class attributes of the trainer)."""
    from automl.registry import available, trainer_class

    allow = Allowlist()
    for name in available():
        cls = trainer_class(name)
        allow = allow.extended(name, cls.saved_types, cls.saved_functions)
    return allow


# ---------------------------------------------------------------- the schema audit

class _Refused(Exception):
    """A node outside the allowlist (the message names it)."""


def _read_schema(data: bytes | Path) -> dict[str, Any]:
    """``schema.json`` of a skops file (its bytes, or its path), parsed as JSON (nothing is
    imported or built)."""
    try:
        with zipfile.ZipFile(data if isinstance(data, Path) else io.BytesIO(data)) as zf:
            schema = json.loads(zf.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, RecursionError):
        raise _Refused("it is not a skops model file") from None
    if not isinstance(schema, dict):
        raise _Refused("its schema is not an object")
    return schema


class NotAllowed(ModelFileError):
    """A model file holds something off the allowlist; ``reason`` names it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"a model file holds something automl does not load ({reason}); refusing "
                         "to load it — refit the model or restore the folder.")


def audit(data: bytes | Path, allow: Allowlist) -> frozenset[str]:
    """Check a skops file (its bytes, or its path) against ``allow`` without building
    anything; return the names it uses.

    Raises:
        NotAllowed: naming the first node refused (an unknown loader, a type or function
            off the list, a partial that binds more than plain data).
    """
    try:
        schema = _read_schema(data)
        protocol = schema.get("protocol")
        if protocol not in AUDITED_PROTOCOLS or isinstance(protocol, bool):
            raise _Refused(f"it uses skops protocol {protocol!r}; this automl reads "
                           f"{sorted(AUDITED_PROTOCOLS)}")
        walker = _Walker(allow)
        walker.node(schema)
        return frozenset(walker.used)
    except _Refused as exc:
        raise NotAllowed(str(exc)) from None
    except RecursionError:
        raise NotAllowed("nested too deeply to check") from None


def _name(state: dict[str, Any]) -> str:
    module, cls = state.get("__module__"), state.get("__class__")
    if not isinstance(module, str) or not isinstance(cls, str) or not module or not cls:
        raise _Refused(f"a node without a type name ({module!r}.{cls!r})")
    return f"{module}.{cls}"


class _Walker:
    """Visits every node skops would build, by the rules of its loader (schema protocol 2)."""

    def __init__(self, allow: Allowlist) -> None:
        self.allow = allow
        self.used: set[str] = set()

    def type(self, name: str, what: str = "type") -> None:
        if name not in self.allow.types:
            raise _Refused(f"{what} '{name}' is not on the allowlist")
        self.used.add(name)

    def function(self, name: str) -> None:
        if name not in self.allow.functions:
            raise _Refused(f"function '{name}' is not on the allowlist")
        self.used.add(name)

    def node(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise _Refused(f"a malformed node ({type(state).__name__})")
        loader = state.get("__loader__")
        if loader not in LOADERS:
            raise _Refused(f"loader {loader!r} for '{state.get('__module__')}.{state.get('__class__')}'")
        getattr(self, f"_{loader}")(state)

    def nodes(self, states: Any) -> None:
        if not isinstance(states, list):
            raise _Refused("a malformed list of nodes")
        for s in states:
            self.node(s)

    def _content(self, state: dict[str, Any]) -> dict[str, Any]:
        content = state.get("content")
        if not isinstance(content, dict):
            raise _Refused(f"a malformed node of '{_name(state)}'")
        return content

    # containers: skops builds them by calling the named type
    def _DictNode(self, state: dict[str, Any]) -> None:
        self.type(_name(state))
        self.node(state.get("key_types"))
        for value in self._content(state).values():
            self.node(value)

    def _ListNode(self, state: dict[str, Any]) -> None:
        self.type(_name(state))
        self.nodes(state.get("content"))

    _SetNode = _TupleNode = _ListNode

    def _DefaultDictNode(self, state: dict[str, Any]) -> None:
        self.type(_name(state))
        content = self._content(state)
        self.node(content.get("main"))
        self.node(content.get("default_factory"))  # a type node, checked like any other

    def _JsonNode(self, state: dict[str, Any]) -> None:
        if not isinstance(state.get("content"), str):
            raise _Refused("a malformed JSON node")

    def _BytesNode(self, state: dict[str, Any]) -> None:
        self.type(_name(state))  # builtins.bytes (read from the zip, never built from a name)


    def _SliceNode(self, state: dict[str, Any]) -> None:
        content = self._content(state)
        if any(v is not None and not isinstance(v, int) for v in content.values()):
            raise _Refused("a slice with a non-integer bound")

    def _CachedNode(self, state: dict[str, Any]) -> None:
        return None  # a reference to a node already visited (skops refuses unknown ids)

    # types and functions
    def _TypeNode(self, state: dict[str, Any]) -> None:
        self.type(_name(state))  # imported and returned, not called

    def _FunctionNode(self, state: dict[str, Any]) -> None:
        self.function(_name(state))

    def _PartialNode(self, state: dict[str, Any]) -> None:
        if _name(state) != "functools.partial":
            raise _Refused(f"'{_name(state)}' posing as functools.partial")
        content = self._content(state)
        func = content.get("func")
        if not isinstance(func, dict) or func.get("__loader__") != "FunctionNode":
            raise _Refused("a partial that wraps something other than a plain function")
        self.function(_name(func))
        for key in ("args", "kwds", "namespace"):
            if not _plain(content.get(key)):
                raise _Refused(f"a partial of '{_name(func)}' whose {key} are not plain data")
        self.used.add("functools.partial")

    # objects: built with __new__ then their state set, or by calling the type
    def _ObjectNode(self, state: dict[str, Any]) -> None:
        self.type(_name(state))
        if state.get("content") is not None:
            self.node(state["content"])

    def _ConstructorFromReduceNode(self, state: dict[str, Any]) -> None:
        self.type(_name(state))
        self.node(state.get("content"))

    def _reduce(self, state: dict[str, Any]) -> None:
        self.type(_name(state))  # the type skops calls with the checked arguments
        reduce = state.get("__reduce__")
        if not isinstance(reduce, dict):
            raise _Refused(f"a malformed node of '{_name(state)}'")
        self.node(reduce.get("args"))
        self.node(state.get("content"))

    _LossNode = _reduce

    def _TreeNode(self, state: dict[str, Any]) -> None:
        self.type("sklearn.tree._tree.Tree")  # skops builds a Tree whatever the node says
        self._reduce(state)

    # numpy and scipy
    def _NdArrayNode(self, state: dict[str, Any]) -> None:
        self.type(_name(state))  # a scalar's type is called with the loaded array
        kind = state.get("type")
        if kind == "numpy":
            if not isinstance(state.get("file"), str):
                raise _Refused("a malformed array node")
        elif kind == "json":
            self.nodes(state.get("content"))
            self.node(state.get("shape"))
        else:
            raise _Refused(f"an array stored as {kind!r}")

    def _DTypeNode(self, state: dict[str, Any]) -> None:
        self.type(_name(state))
        self.node(state.get("content"))

    def _RandomStateNode(self, state: dict[str, Any]) -> None:
        self.type(_name(state))
        self.node(state.get("content"))

    def _RandomGeneratorNode(self, state: dict[str, Any]) -> None:
        self.type(_name(state))
        content = self._content(state)
        try:
            name = json.loads(content["bit_generator"]["content"]["bit_generator"]["content"])
        except (KeyError, TypeError, ValueError):
            name = None
        if name not in BIT_GENERATORS:
            raise _Refused(f"a random generator with bit generator {name!r}")
        self.node(content.get("bit_generator"))
        self.node(content.get("seed_seq"))

    def _SparseMatrixNode(self, state: dict[str, Any]) -> None:
        self.type(_name(state))  # read with scipy's load_npz, which refuses pickles
        if state.get("type") != "scipy":
            raise _Refused("a malformed sparse matrix node")


def _plain(state: Any) -> bool:
    """True for data that calls nothing when built: JSON values, data types (``float64``
    as a dtype argument) and builtin lists, tuples and dicts of them."""
    if not isinstance(state, dict):
        return False
    loader = state.get("__loader__")
    if loader == "JsonNode":
        return isinstance(state.get("content"), str)
    name = f"{state.get('__module__')}.{state.get('__class__')}"
    if loader == "TypeNode":
        return name in DATA_TYPES
    if loader in ("ListNode", "TupleNode") and name in ("builtins.list", "builtins.tuple"):
        content = state.get("content")
        return isinstance(content, list) and all(_plain(v) for v in content)
    if loader == "DictNode" and name == "builtins.dict":
        content = state.get("content")
        return isinstance(content, dict) and _plain(state.get("key_types")) and all(
            _plain(v) for v in content.values())
    return False
