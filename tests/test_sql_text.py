"""No SQL text is built from a value or a path by string formatting (issue 16; hardening D2 was such a case).

Values reach DuckDB as bound parameters; where a value must be part of the text (an identifier, a literal inside a
generated query), it goes through ``schemas.sqltext`` (``literal``, ``ident``, ``varchar_list``, ``number``), which
``tests/schemas/test_sqltext.py`` holds against hostile strings.

The scan reads every module of the project's packages with ``ast`` and follows values through the project:

1. **SQL text being built.** Every f-string, ``%``-format, ``.format`` call and ``+`` concatenation whose literal
   text holds an upper-case SQL keyword. Every piece it interpolates must be *safe*.
2. **Sinks.** What reaches ``execute``/``executemany``/``sql``/``query`` through names (``sql = head + name``) must
   not be string formatting of an unsafe piece either.

A piece is safe when it is a constant or an UPPER_CASE constant; a call of a ``schemas.sqltext`` function, or of
``int``/``float``/``len`` (digits cannot leave a literal); a project function every ``return`` of which is safe
(a generated-SQL builder, checked where it is written); a parameter every call site in the project passes a safe
value (or its safe default); a local name every assignment of which is safe (``=``, ``+=``, ``.append``,
``.extend``, ``for``); a ``join``/``format``/comprehension/conditional/collection/element of safe pieces.
Anything else is a finding: an attribute of an object, a value read from data, a path, a call of a library.

A mapping's values are judged apart from its keys: ``d[k]``, ``d.get(k, default)``, ``d.values()`` and the ``v`` of
``for k, v in d.items()`` are one of its values, so they are safe when every value is (through dict displays and
comprehensions, local names with their ``d[k] = v`` assignments, and project functions' returns), whatever the
keys hold: a field's position looked up by its name (``{s.name: i ...}[name]``) is a count. Iterating a mapping
gives its keys, which must then be safe themselves.

Two short lists complete it. ``BUILDERS``: functions whose results the scan cannot follow (none today).
``ELSEWHERE``: findings in other rooms, recorded when this test was written and routed to their owners; each entry
is (file, piece), and an entry that no longer matches a finding fails the test, so the list only shrinks (empty
since the SQL-text pass of 2026-12).
``test_the_scan_catches_made_up_violations`` shows the scan fails on D2's own pattern and its kin.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import REPO

PACKAGES = ("schemas", "instruments", "privacy", "analysis", "reports", "flows")
SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|COPY|ATTACH|FROM|WHERE|JOIN|VALUES|PRAGMA|DROP|ALTER|"
                       r"GROUP BY|ORDER BY|CASE WHEN|SET \w+ =)\b")
SINKS = {"execute", "executemany", "sql", "query"}
SQLTEXT = {"literal", "ident", "varchar_list", "number"}
NUMBERS = {"int", "float", "len"}  # what they return cannot hold a quote
# builtins and methods whose result is made of their inputs (an element, a pair, a sorted copy, ...)
TRANSPARENT = {"str", "repr", "enumerate", "zip", "sorted", "reversed", "list", "tuple", "set", "range", "min", "max", "sum", "abs",
               "round", "dict", "items", "values", "keys", "get", "replace", "strip", "rstrip", "lstrip", "upper",
               "lower", "split", "splitlines", "join", "format", "combinations_with_replacement"}
STRING_METHODS = {"replace", "strip", "rstrip", "lstrip", "upper", "lower", "split", "splitlines", "join", "format",
                  "items", "values", "keys", "get"}

# Functions whose results are SQL the scan cannot follow, each with the reason it is safe. Keep it short.
BUILDERS: dict[str, str] = {}

# Findings in other rooms when this test was written (2026-12, privacy branch), routed to their owners by the lead;
# (file, piece) so that a moved line does not matter. Remove an entry when its finding is fixed: a stale entry fails.
# Empty since the SQL-text pass (2026-12) fixed the last 47 (the MMRM and binary builders, the ingest, the quality
# frames, the simulation): a new finding is fixed where it is, not recorded here.
ELSEWHERE: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Finding:
    where: str
    piece: str

    @property
    def file(self) -> str:
        return self.where.split(":")[0]

    def __str__(self) -> str:
        return f"{self.where}: {self.piece}"


def _literal_text(node: ast.AST) -> str:
    """The constant text of a string-building expression (what decides whether it is SQL)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return _literal_text(node.left) + " " + _literal_text(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join"):
        return _literal_text(node.func.value)
    return ""


def _is_building(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod)) \
        or (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format")


def _is_sql_building(node: ast.AST) -> bool:
    return _is_building(node) and bool(SQL_WORDS.search(_literal_text(node)))


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _own_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a function or module body, not those of the functions and classes nested in it."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        yield child
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(child))


def _element(value: ast.AST) -> ast.AST:
    """'An element of value' (a loop variable, an unpacked part): safe exactly when the whole is (iterating a
    mapping gives its keys)."""
    node = ast.Subscript(value=value, slice=ast.Constant(0))
    node.element = True  # type: ignore[attr-defined]
    return node


class _ValueOf(ast.expr):
    """'A value of the mapping' (``d[k]``, ``d.get(k)``, ``d.values()``, the second of ``d.items()``): safe when
    the mapping's values are, whatever its keys."""

    _fields = ("value",)


class _Scope:
    """The assignments of one function's (or the module's) names, to resolve a name to what it can hold."""

    def __init__(self, node: ast.AST, parent: _Scope | None):
        self.node = node
        self.parent = parent
        self.values: dict[str, list[ast.AST]] = {}
        self.params: set[str] = set()
        self._stored: dict[str, list[ast.AST]] = {}  # d[k] = v, kept as {k: v} for a mapping bound here
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = node.args
            self.params = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
            self.params |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
        for child in _own_nodes(node) if not isinstance(node, ast.GeneratorExp | ast.ListComp | ast.SetComp
                                                        | ast.DictComp) else node.generators:
            if isinstance(child, ast.Assign):
                for target in child.targets:
                    self._bind(target, child.value)
            elif isinstance(child, ast.AnnAssign | ast.AugAssign) and child.value is not None:
                self._bind(child.target, child.value)
            elif isinstance(child, ast.For | ast.comprehension):
                self._bind(child.target, _element(child.iter))
            elif isinstance(child, ast.NamedExpr):
                self._bind(child.target, child.value)
            elif isinstance(child, ast.withitem) and child.optional_vars is not None:
                self._bind(child.optional_vars, child.context_expr)
            elif isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and \
                    child.func.attr in ("append", "extend", "insert") and isinstance(child.func.value, ast.Name):
                for arg in child.args[-1:]:
                    self.values.setdefault(child.func.value.id, []).append(
                        _element(arg) if child.func.attr == "extend" else arg)
        for name, stored in self._stored.items():
            if name in self.values:
                self.values[name] += stored

    def _bind(self, target: ast.AST, value: ast.AST) -> None:
        if isinstance(target, ast.Name):
            self.values.setdefault(target.id, []).append(value)
        elif isinstance(target, ast.Tuple | ast.List):
            parts = _parts(value, len(target.elts))
            for i, element in enumerate(target.elts):
                for part in parts:
                    self._bind(element, part[i] if isinstance(part, list) else part)
        elif isinstance(target, ast.Starred):
            self._bind(target.value, value)
        elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and \
                not isinstance(target.slice, ast.Slice):
            self._stored.setdefault(target.value.id, []).append(ast.Dict(keys=[target.slice], values=[value]))

    def owner_of(self, name: str) -> tuple[_Scope, bool] | None:
        """The scope that binds ``name`` and whether it is that scope's parameter."""
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.values:
                return scope, False
            if name in scope.params:
                return scope, True
            scope = scope.parent
        return None


def _parts(value: ast.AST, n: int) -> list:
    """How ``a, b = value`` splits: element-wise for a tuple (or both branches of a conditional), else each name
    holds 'an element of' the value."""
    if isinstance(value, ast.Tuple | ast.List) and len(value.elts) == n and \
            not any(isinstance(e, ast.Starred) for e in value.elts):
        return [list(value.elts)]
    if isinstance(value, ast.IfExp):
        return _parts(value.body, n) + _parts(value.orelse, n)
    if getattr(value, "element", False) and isinstance(value.value, ast.Call) and n == 2 and not value.value.args \
            and isinstance(value.value.func, ast.Attribute) and value.value.func.attr == "items":
        mapping = value.value.func.value  # for k, v in d.items(): k a key, v a value of d
        return [[_element(mapping), _ValueOf(mapping)]]
    if isinstance(value, ast.Subscript) and isinstance(value.value, ast.Call) and value.value.args:
        call, name = value.value, _call_name(value.value)
        if name == "enumerate" and n == 2:  # for i, x in enumerate(xs): i is a count, x an element of xs
            return [[ast.Constant(0), _element(call.args[0])]]
        if name == "zip" and n == len(call.args):  # for a, b in zip(xs, ys): an element of each
            return [[_element(a) for a in call.args]]
    return [_element(value)]


class Project:
    """Every module of the project, with an index of functions and call sites by name, to follow values."""

    def __init__(self, sources: dict[str, str]):
        self.trees = {where: ast.parse(text) for where, text in sources.items()}
        self.functions: dict[str, list[tuple[ast.AST, _Scope]]] = {}
        self.calls: dict[str, list[tuple[ast.Call, _Scope]]] = {}
        self.scopes: dict[int, _Scope] = {}
        for tree in self.trees.values():
            self._index(tree, _Scope(tree, None))
        self._returns: dict[int, bool] = {}
        self._returns_values: dict[int, bool] = {}
        self._params: dict[tuple[int, str], bool] = {}

    def _index(self, node: ast.AST, scope: _Scope) -> None:
        self.scopes[id(node)] = scope
        for child in _own_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = _Scope(child, scope)
                self.functions.setdefault(child.name, []).append((child, inner))
                self._index(child, inner)
            elif isinstance(child, ast.Lambda):
                self._index(child, _Scope(child, scope))
            elif isinstance(child, ast.ClassDef):
                self._index(child, scope)
            elif isinstance(child, ast.Call):
                name = _call_name(child)
                if name:
                    self.calls.setdefault(name, []).append((child, scope))

    # -- safety of a piece of SQL text -----------------------------------------------------------------------
    def safe(self, node: ast.AST, scope: _Scope, seen: frozenset = frozenset()) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.JoinedStr):
            return all(self.safe(v.value, scope, seen) for v in node.values if isinstance(v, ast.FormattedValue))
        if isinstance(node, ast.BinOp | ast.BoolOp | ast.Compare | ast.UnaryOp):
            return all(self.safe(c, scope, seen) for c in ast.iter_child_nodes(node)
                       if not isinstance(c, ast.operator | ast.boolop | ast.cmpop | ast.unaryop))
        if isinstance(node, ast.IfExp):
            return self.safe(node.body, scope, seen) and self.safe(node.orelse, scope, seen)
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return all(self.safe(e, scope, seen) for e in node.elts)
        if isinstance(node, ast.Dict):
            return all(self.safe(v, scope, seen) for v in node.values) and \
                all(k is None or self.safe(k, scope, seen) for k in node.keys)
        if isinstance(node, _ValueOf) or (isinstance(node, ast.Subscript) and not getattr(node, "element", False)
                                          and not isinstance(node.slice, ast.Slice)):
            return self._values_safe(node.value, scope, seen)  # d[k] is one of d's values, never a key
        if isinstance(node, ast.Subscript | ast.Starred):
            return self.safe(node.value, scope, seen)
        if isinstance(node, ast.GeneratorExp | ast.ListComp | ast.SetComp):
            return self.safe(node.elt, _Scope(node, scope), seen)
        if isinstance(node, ast.DictComp):
            inner = _Scope(node, scope)
            return self.safe(node.key, inner, seen) and self.safe(node.value, inner, seen)
        if isinstance(node, ast.Name):
            return self._name_safe(node.id, scope, seen)
        if isinstance(node, ast.Attribute):
            return node.attr.isupper()
        if isinstance(node, ast.Call):
            return self._call_safe(node, scope, seen)
        return False

    def _name_safe(self, name: str, scope: _Scope, seen: frozenset) -> bool:
        if name.isupper() or name in ("True", "False", "None"):
            return True
        found = scope.owner_of(name)
        if found is None:
            return False  # a builtin or an import: not a value the code wrote
        owner, is_param = found
        key = (id(owner), name)
        if key in seen:
            return True  # a cycle adds nothing unsafe by itself
        if is_param:
            return self._param_safe(owner, name, seen | {key})
        return all(self.safe(v, owner, seen | {key}) for v in owner.values[name])

    def _param_safe(self, owner: _Scope, name: str, seen: frozenset) -> bool:
        """A parameter is safe if every call site in the project passes a safe value (or leaves its safe default)."""
        func = owner.node
        if isinstance(func, ast.Lambda) or not hasattr(func, "name"):
            return False
        cache = (id(func), name)
        if cache in self._params:
            return self._params[cache]
        args = func.args
        positional = [a.arg for a in [*args.posonlyargs, *args.args]]
        if positional and positional[0] in ("self", "cls"):
            positional = positional[1:]
        defaults = dict(zip([a.arg for a in [*args.posonlyargs, *args.args]][-len(args.defaults):] if args.defaults
                            else [], args.defaults, strict=False))
        defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None})
        sites = self.calls.get(func.name, [])
        if not sites:
            result = False
        else:
            result = True
            for call, caller in sites:
                value = next((k.value for k in call.keywords if k.arg == name), None)
                if value is None and name in positional and positional.index(name) < len(call.args):
                    value = call.args[positional.index(name)]
                    if isinstance(value, ast.Starred):
                        value = None
                if value is None:
                    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
                        result = False  # *args / **kwargs: cannot tell what reaches the parameter
                        break
                    value = defaults.get(name, ast.Constant(None))
                    caller = owner.parent or caller
                if not self.safe(value, caller, seen):
                    result = False
                    break
        self._params[cache] = result
        return result

    def _call_safe(self, node: ast.Call, scope: _Scope, seen: frozenset) -> bool:
        name = _call_name(node)
        if isinstance(node.func, ast.Name) and (found := scope.owner_of(name)) and not found[1]:
            lambdas = [v for v in found[0].values[name] if isinstance(v, ast.Lambda)]
            if lambdas:  # col = lambda n: ...; col("wave"): the body with this call's arguments
                return all(self._lambda_safe(fn, node, scope, seen) for fn in lambdas)
        if name in SQLTEXT or name in NUMBERS or name in BUILDERS:
            return True
        if name == "map" and node.args and isinstance(node.args[0], ast.Name):  # map(literal, names)
            fn = node.args[0].id
            quoted = fn in SQLTEXT or fn in NUMBERS or fn in BUILDERS or (
                fn in self.functions and all(self._returns_safe(f, i, seen) for f, i in self.functions[fn]))
            return quoted or all(self.safe(a, scope, seen) for a in node.args[1:])
        if name in ("get", "values") and isinstance(node.func, ast.Attribute):  # d.get(k, default), d.values()
            return self._values_safe(node.func.value, scope, seen) and \
                all(self.safe(a, scope, seen) for a in [*node.args[1:], *(k.value for k in node.keywords)])
        if name in TRANSPARENT:
            receiver = [node.func.value] if isinstance(node.func, ast.Attribute) and name in STRING_METHODS else []
            return all(self.safe(a, scope, seen) for a in [*receiver, *node.args]) and \
                all(self.safe(k.value, scope, seen) for k in node.keywords)
        if name in self.functions:
            return all(self._returns_safe(func, inner, seen) for func, inner in self.functions[name])
        return False

    def _values_safe(self, node: ast.AST, scope: _Scope, seen: frozenset) -> bool:
        """Whether every value of the mapping ``node`` is safe, its keys aside (a subscript never gives a key). A
        dict display or comprehension, a local name, a project function's returns are followed; anything else
        must be safe whole."""
        if isinstance(node, ast.Dict):
            return all(self.safe(v, scope, seen) if k is not None else self._values_safe(v, scope, seen)
                       for k, v in zip(node.keys, node.values, strict=True))
        if isinstance(node, ast.DictComp):
            return self.safe(node.value, _Scope(node, scope), seen)
        if isinstance(node, ast.IfExp):
            return self._values_safe(node.body, scope, seen) and self._values_safe(node.orelse, scope, seen)
        if isinstance(node, ast.Name) and not node.id.isupper() and (found := scope.owner_of(node.id)) \
                and not found[1]:
            owner, key = found[0], (id(found[0]), node.id, "values")
            return key in seen or all(self._values_safe(v, owner, seen | {key}) for v in owner.values[node.id])
        if isinstance(node, ast.Call) and (name := _call_name(node)) in self.functions and \
                name not in SQLTEXT | NUMBERS | set(BUILDERS) and not (
                    isinstance(node.func, ast.Name) and scope.owner_of(name) is not None):
            return all(self._returns_values_safe(func, inner, seen) for func, inner in self.functions[name])
        return self.safe(node, scope, seen)

    def _returns_values_safe(self, func: ast.AST, scope: _Scope, seen: frozenset) -> bool:
        if id(func) in self._returns_values:
            return self._returns_values[id(func)]
        self._returns_values[id(func)] = True  # assumed while it is being decided (recursion)
        result = all(r.value is None or self._values_safe(r.value, scope, seen)
                     for r in _own_nodes(func) if isinstance(r, ast.Return))
        self._returns_values[id(func)] = result
        return result

    def _lambda_safe(self, fn: ast.Lambda, call: ast.Call, scope: _Scope, seen: frozenset) -> bool:
        if len(call.args) != len(fn.args.args) or call.keywords:
            return False
        inner = _Scope(fn, scope)
        inner.params = set()
        for param, arg in zip(fn.args.args, call.args, strict=True):
            if not self.safe(arg, scope, seen):
                return False
            inner.values[param.arg] = [ast.Constant("")]  # a safe argument
        return self.safe(fn.body, inner, seen)

    def _returns_safe(self, func: ast.AST, scope: _Scope, seen: frozenset) -> bool:
        if id(func) in self._returns:
            return self._returns[id(func)]
        self._returns[id(func)] = True  # assumed while it is being decided (recursion)
        result = all(r.value is None or self.safe(r.value, scope, seen)
                     for r in _own_nodes(func) if isinstance(r, ast.Return))
        self._returns[id(func)] = result
        return result

    # -- findings ---------------------------------------------------------------------------------------------
    def unsafe_pieces(self, node: ast.AST, scope: _Scope) -> list[str]:
        if isinstance(node, ast.JoinedStr):
            return [ast.unparse(v.value) for v in node.values
                    if isinstance(v, ast.FormattedValue) and not self.safe(v.value, scope)]
        if isinstance(node, ast.BinOp):
            return self.unsafe_pieces(node.left, scope) + self.unsafe_pieces(node.right, scope)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join"):
            pieces = [node.func.value, *node.args, *(k.value for k in node.keywords)]
            return [ast.unparse(a) for a in pieces if not self.safe(a, scope)]
        return [] if self.safe(node, scope) else [ast.unparse(node)]

    def _formatted_unsafely(self, node: ast.AST, scope: _Scope, seen: frozenset = frozenset()) -> bool:
        """Whether text reaching a sink was put together by formatting an unsafe piece (names followed)."""
        if _is_building(node):
            return bool(self.unsafe_pieces(node, scope))
        if isinstance(node, ast.IfExp):
            return self._formatted_unsafely(node.body, scope, seen) or self._formatted_unsafely(node.orelse, scope, seen)
        if isinstance(node, ast.Name):
            found = scope.owner_of(node.id)
            if found is None or found[1] or (id(found[0]), node.id) in seen:
                return False
            owner = found[0]
            return any(self._formatted_unsafely(v, owner, seen | {(id(owner), node.id)}) for v in owner.values[node.id])
        return False

    def findings(self) -> list[Finding]:
        out: set[Finding] = set()
        for where, tree in self.trees.items():
            for node in ast.walk(tree):
                scope = self._scope_of(tree, node)
                if scope is None:
                    continue
                if _is_sql_building(node):
                    out.update(Finding(f"{where}:{node.lineno}", p) for p in self.unsafe_pieces(node, scope))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SINKS:
                    sql = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "query"), None)
                    if sql is not None and not _is_sql_building(sql) and self._formatted_unsafely(sql, scope):
                        out.add(Finding(f"{where}:{node.lineno}", f"{node.func.attr}({ast.unparse(sql)})"))
        return sorted(out, key=lambda f: (f.file, int(f.where.split(":")[1]), f.piece))

    def _scope_of(self, tree: ast.AST, target: ast.AST) -> _Scope | None:
        if not hasattr(self, "_owner"):
            self._owner: dict[int, _Scope] = {}
            for t in self.trees.values():
                self._assign_owners(t, self.scopes[id(t)])
        return self._owner.get(id(target))

    def _assign_owners(self, node: ast.AST, scope: _Scope) -> None:
        for child in _own_nodes(node):
            self._owner[id(child)] = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
                self._assign_owners(child, self.scopes.get(id(child), scope))


def scan_sources(sources: dict[str, str]) -> list[Finding]:
    return Project(sources).findings()


def scan(root: Path = REPO) -> list[Finding]:
    sources = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            sources[str(path.relative_to(root))] = path.read_text(encoding="utf-8")
    return scan_sources(sources)


def test_no_sql_text_is_built_from_a_value_or_a_path():
    findings = scan()
    new = [f for f in findings if (f.file, f.piece) not in ELSEWHERE]
    assert not new, "SQL text built from values:\n" + "\n".join(map(str, new))
    stale = ELSEWHERE - {(f.file, f.piece) for f in findings}
    assert not stale, f"fixed since, remove from ELSEWHERE: {sorted(stale)}"
    assert not any(f.file.startswith("privacy/") for f in findings)  # the privacy room is clean, with no exception


def test_the_scan_catches_made_up_violations():
    """D2's own pattern, a value in a WHERE, a path in an ATTACH by concatenation and by %-format, SQL put together
    from names before execute, and an unquoted parameter in a builder are all caught; quoted and bound ones not.
    A value reached through a mapping is caught (held in it, stored into it later, a ``get`` default, a key by
    iteration or ``items()``); a count looked up by name in a mapping of counts is not."""
    bad = '''
import duckdb
from schemas.sqltext import literal, ident

def scrub(con, path, tmp):
    con.execute(f"COPY (SELECT * FROM read_parquet($src) t) TO '{tmp}' (FORMAT parquet)", {"src": str(path)})

def lookup(con, study_id):
    return con.execute(f"SELECT * FROM scores WHERE study_id = '{study_id}'").fetchall()

def attach(con, path):
    con.execute("ATTACH '" + str(path) + "' AS x")
    con.execute("ATTACH '%s' AS y" % path)

def assembled(con, name):
    head = "SELECT * FROM t WHERE a = "
    sql = head + name
    con.execute(sql)

def builder(table):
    return f"SELECT count(*) FROM {table}"

def mapped(con, value, names):
    cols = {"a": value}
    con.execute(f"SELECT {cols['a']} FROM t")
    pos = {name: i for i, name in enumerate(names)}
    for name in pos:
        con.execute(f"SELECT {name} FROM t")
    for name, i in pos.items():
        con.execute(f"SELECT v_{i} AS {name} FROM t")
    later = {}
    later["a"] = value
    con.execute(f"SELECT {later['a']} FROM t")
    con.execute(f"SELECT {pos.get('x', value)} FROM t")
'''
    good = '''
from schemas.sqltext import ident, literal
COLUMNS = ("a", "b")
SCOPE = {"events": "telemetry"}

def fine(con, study_id, path, table, cols):
    con.execute("SELECT * FROM scores WHERE study_id = ?", [study_id])
    con.execute("ATTACH ? AS x", [str(path)])
    con.execute(f"SELECT {', '.join(ident(c) for c in cols)} FROM {ident(table)} WHERE s = {literal(study_id)}")
    where = [f"study_id = {literal(study_id)}"]
    where.append("value IS NOT NULL")
    con.execute(f"SELECT * FROM scores WHERE {' AND '.join(where)} LIMIT {int(len(cols))}")
    con.execute(f"SELECT {', '.join(COLUMNS)} FROM t")

def positions(con, names, kind):
    pos = {name: i for i, name in enumerate(names, start=1)}
    v = {name: f"v_{i}" for name, i in pos.items()}
    con.execute(f"SELECT {v['x']}, v_{pos['y']}, {', '.join(f'v_{i}' for i in pos.values())} FROM t")
    con.execute(f"SELECT {SCOPE.get(kind)}, v_{pos.get(kind, 0)} FROM t")
'''
    found = scan_sources({"bad.py": bad})
    lines = {int(f.where.split(":")[1]) for f in found}
    assert lines == {6, 9, 12, 13, 18, 21, 25, 28, 30, 33, 34}, "\n".join(map(str, found))
    assert any(f.piece == "tmp" for f in found) and any(f.piece == "study_id" for f in found)
    assert {f.piece for f in found if f.where == "bad.py:30"} == {"name"}  # the key of items(), not the value
    assert scan_sources({"good.py": good}) == []
